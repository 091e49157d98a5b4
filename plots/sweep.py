#!/usr/bin/env python3
"""The sweep driver behind scripts/sweep: runs a named matrix of experiment specs on
schedsim and/or the hypervisor and writes one CSV row per run and domain group.

Each point of a matrix is a complete spec, written out as TOML next to its results
(DIR/ENGINE/POINT.toml, DIR/ENGINE/POINT.jsonl), so a point can be rerun by hand with the
exact file that ran and both engines read the very same file. The matrices start from the
specs in scripts/experiments/ and change only what the sweep names (policy, domain count,
CPU count, one parameter). Standard library only (Python 3.11: tomllib).

    scripts/sweep NAME [--engine schedsim|domino|both|linux|all] [--quick] [--out DIR]
                       [--sched P,P] [--values V,V] [--seconds S] [--list]
                       [--profile FILE]   (schedsim on a cost profile, scripts/calibrate)
                       [--slice-late-from DIR]  (and each point's slice lateness from the
                                                 hypervisor run of a sweep in DIR)
                       [--costs-from DIR]  (or its kick and slice lateness and CPU stalls)
                       [--holds-anywhere]  (with --costs-from: schedsim
                                            --holds-anywhere)
                       [--trace]  (each run's trace beside its results: POINT.trace.json)
                       [--replay-from DIR]  (schedsim replays each point's trace from the
                                             sweep in DIR: schedsim --replay)

Exit status: 0 every run exited 0; 1 a run failed (its row says so, the CSV is written all
the same); 2 a bad command line, or a point whose run (--costs-from, --slice-late-from) or
trace (--replay-from) the given directory lacks (each named; nothing runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import registry

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "scripts" / "experiments"

# Columns of the CSV, in order. One row per (run, domain group). `param`/`value` name the
# swept parameter of the matrix (e.g. domains = 16, neighbours = 4). Shares are fractions
# of the whole machine (cpus × duration); `cpus_used` is the same in CPUs.
COLUMNS = [
    "sweep", "engine", "policy", "cpus", "domains", "param", "value", "variant",
    "group", "workload", "count", "weight_sum", "cap", "cpu_ns", "cpu_share", "cpus_used",
    "work", "work_per_s", "wake_lat_p50_ns", "wake_lat_p99_ns", "wake_lat_max_ns",
    "jain", "share_err_max", "duration_ns", "exit", "status", "wall_s", "results",
    "host_load",
]


@dataclass
class Point:
    """One run of a matrix: the spec to write and how to label it."""

    policy: str
    param: str
    value: object
    spec: dict
    variant: str = ""  # a second dimension where a matrix has one (isolation: neighbour kind)

    @property
    def slug(self) -> str:
        v = f"-{self.variant}" if self.variant else ""
        return f"{self.policy}{v}-{self.param}-{self.value}"


@dataclass
class Matrix:
    """A named sweep: a description and a function from options to points. `policies`
    gives the default policies: a function of the registry (`plots/registry.py`), so a new
    policy is swept by every matrix it suits, or a fixed list."""

    name: str
    about: str
    points: callable
    values: list = field(default_factory=list)
    quick_values: list = field(default_factory=list)
    policies: callable | list = field(default_factory=list)

    def default_policies(self) -> list[str]:
        return self.policies() if callable(self.policies) else list(self.policies)


def preempting() -> list[str]:
    """Policies that can run cpu-bound domains on every CPU (the others would keep them)."""
    return registry.names(preempts=True)


def weighted() -> list[str]:
    return registry.names(domain_param="weight")


def capped() -> list[str]:
    return registry.names(domain_param="cap")


def load_spec(name: str) -> dict:
    with open(EXPERIMENTS / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def with_policy(spec: dict, policy: str) -> dict:
    """A deep copy of `spec` under `policy`; the other policies' knobs stay (they are ignored)."""
    s = json.loads(json.dumps(spec))
    s.setdefault("sched", {})["policy"] = policy
    return s


# --- the matrices -------------------------------------------------------------------------


def scaling_points(policies, values):
    base = load_spec("scaling")
    for p in policies:
        for n in values:
            s = with_policy(base, p)
            s["domain"][0]["count"] = int(n)
            yield Point(p, "domains", int(n), s)


def weights_points(policies, values):
    base = load_spec("weights")
    for p in policies:
        for cpus in values:
            s = with_policy(base, p)
            s["machine"]["cpus"] = int(cpus)
            yield Point(p, "cpus", int(cpus), s)


def latency_points(policies, values):
    base = load_spec("latency")
    for p in policies:
        for hogs in values:
            s = with_policy(base, p)
            s["domain"][1]["count"] = int(hogs)
            yield Point(p, "hogs", int(hogs), s)


# Isolation: a victim cpu domain on 2 CPUs with N neighbours of one kind. Fair share of the
# victim: min(1, 2 / (N + 1)) CPUs for hogs and yield attackers; 1 CPU for hostile tenants,
# which a correct hypervisor kills at once.
ISOLATION_KINDS = {
    # kind: (workload, args, expect)
    "hog": ("cpu", {}, "ok"),
    "yield-attack": ("yield", {"tick_us": 10000, "before_us": 100}, "ok"),
    "io": ("io", {}, "ok"),
    "hostile": ("hostile-priv", {"insn": 0}, "killed"),
}


def neighbour_points(name, kinds, bystanders, warmup_ms, policies, values):
    """Points of an isolation matrix: `bystanders` on 2 CPUs next to N neighbours of each
    kind in `kinds` (workload, args, expect)."""
    for p in policies:
        for kind, (workload, args, expect) in kinds.items():
            for n in values:
                s = {
                    "name": name,
                    "duration_ms": 2000,
                    "warmup_ms": warmup_ms,
                    "machine": {"cpus": 2},
                    "sched": {"policy": p},
                    "domain": [dict(b) for b in bystanders],
                }
                if int(n) > 0:
                    g = {"name": "n", "count": int(n), "workload": workload, "expect": expect}
                    if args:
                        g["args"] = dict(args)
                    s["domain"].append(g)
                yield Point(p, "neighbours", int(n), s, variant=kind)


def isolation_points(policies, values):
    victim = [{"name": "victim", "workload": "cpu"}]
    yield from neighbour_points("isolation", ISOLATION_KINDS, victim, 200, policies, values)


# Isolation on the hypervisor (issue 10): two bystanders, a cpu-bound `victim` and a
# `lat` latency domain (wakes every 1 ms, runs 100 us), on 2 CPUs next to N neighbours of
# one hostile kind that stay alive and attack for the whole interval (fuzzers, yield
# attackers) or are killed at once (hostile), and as a reference N benign cpu hogs. The
# figure sets the victim's CPU time against its max-min fair share given what the others
# used, and the latency domain's p99 wake-up latency against its own alone (N = 0) and
# beside as many benign hogs.
HOSTILE_KINDS = {
    # kind: (workload, args, expect); `hog` is the benign reference: as many cpu-bound
    # neighbours, which a latency domain also waits behind under a proportional policy.
    "hog": ("cpu", {}, "ok"),
    "fuzz": ("fuzz", {"mode": 0, "calls": 0}, "ok"),
    "yield-attack": ("yield", {"tick_us": 10000, "before_us": 100}, "ok"),
    "hostile": ("hostile-priv", {"insn": 0}, "killed"),
}


def hostile_points(policies, values):
    bystanders = [
        {"name": "victim", "workload": "cpu"},
        {"name": "lat", "workload": "latency", "args": {"period_us": 1000, "run_us": 100}},
    ]
    yield from neighbour_points("isolation-hv", HOSTILE_KINDS, bystanders, 300, policies,
                                values)


def caps_points(policies, values):
    base = load_spec("caps")
    for p in policies:
        for cap in values:
            s = with_policy(base, p)
            s["domain"][0]["cap"] = int(cap)
            yield Point(p, "cap", int(cap), s)


# Consolidation (issue 12): consolidation.toml's two weight classes (half the domains at
# 256, half at 512; 5 ms slices for every policy) on 4 CPUs, as the domains per CPU grow.
# Credit runs twice: as Xen wrote it (variant `xen`, exact_credit = 0) and with exact
# shares (variant `exact`); plots/consolidation.py draws the largest class share error.
CONSOLIDATION_CPUS = 4


def consolidation_points(policies, values):
    base = load_spec("consolidation")
    for p in policies:
        variants = {"xen": 0, "exact": 1} if p == "credit" else {"": None}
        for variant, exact in variants.items():
            for per_cpu in values:
                s = with_policy(base, p)
                s["machine"]["cpus"] = CONSOLIDATION_CPUS
                if exact is not None:
                    s["sched"]["exact_credit"] = exact
                n = int(per_cpu) * CONSOLIDATION_CPUS
                s["domain"][0]["count"] = n // 2
                s["domain"][1]["count"] = n - n // 2
                yield Point(p, "domains_per_cpu", int(per_cpu), s, variant=variant)


# Results over time: windows.toml (cpu domains and a latency domain on 4 CPUs, 1 s
# windows), the cpu group's count varied; plots/window_jain.py draws Jain per window.
def windows_points(policies, values):
    base = load_spec("windows")
    for p in policies:
        for n in values:
            s = with_policy(base, p)
            s["domain"][0]["count"] = int(n)
            yield Point(p, "domains", int(n), s)


# Simulator against hypervisor (issue 15): five specs under every policy that each
# supports, on 1, 2 and 4 CPUs (param: cpus; variant: the spec), for `--engine both
# --profile FILE` (calibrated schedsim beside the hypervisor) and plots/simvshyp.py.
# What a spec does not support is left out: fifo everywhere (it never preempts, and every
# spec has a never-blocking vCPU per CPU, which the limits refuse: sched/src/limits.rs);
# weights under policies without a `weight` (rr, rtds: the spec would measure nothing it
# is about); caps under policies without a `cap` (only credit and credit2 have one).
# scaling runs 16 domains, not 128 (a boot of 128 domains takes most of a minute under TCG),
# isolation is a cpu victim and a latency domain beside 2 yield attackers (the isolation
# sweeps' bystanders and credit's attacker).
SIMVSHYP_SPECS = {
    # spec: (policies it supports, how it is built from scripts/experiments)
    "latency": (preempting, lambda: load_spec("latency")),
    "weights": (weighted, lambda: load_spec("weights")),
    "caps": (capped, lambda: load_spec("caps")),
    "scaling": (preempting, lambda: dict(load_spec("scaling"), domain=[
        dict(load_spec("scaling")["domain"][0], count=16)])),
    "isolation": (preempting, lambda: {
        "name": "isolation", "duration_ms": 2000, "warmup_ms": 300,
        "machine": {"cpus": 2}, "sched": {"policy": "credit"},
        "domain": [
            {"name": "victim", "workload": "cpu"},
            {"name": "lat", "workload": "latency", "args": {"period_us": 1000, "run_us": 100}},
            {"name": "n", "count": 2, "workload": "yield",
             "args": dict(ISOLATION_KINDS["yield-attack"][1])},
        ]}),
}


def simvshyp_points(policies, values):
    for spec, (supported, build) in SIMVSHYP_SPECS.items():
        ok = set(supported())
        for p in policies:
            if p not in ok:
                continue
            for cpus in values:
                s = with_policy(build(), p)
                s.setdefault("machine", {})["cpus"] = int(cpus)
                # Short runs (the sweep is 72 boots): at most 300 ms of warm-up.
                s["warmup_ms"] = min(s.get("warmup_ms", 300), 300)
                yield Point(p, "cpus", int(cpus), s, variant=spec)


MATRICES = {
    m.name: m
    for m in [
        Matrix("scaling", "scaling.toml: 1..128 cpu domains on 4 CPUs (param: domains)",
               scaling_points, [1, 2, 4, 8, 16, 32, 64, 128], [1, 4, 16], preempting),
        Matrix("weights", "weights.toml: weights 1..8 (param: cpus)",
               weights_points, [2], [2], weighted),
        Matrix("latency", "latency.toml: a latency domain among cpu hogs on 4 CPUs (param: hogs)",
               latency_points, [15], [7], preempting),
        Matrix("isolation", "a victim cpu domain on 2 CPUs next to N neighbours of each kind "
               "(hog, yield-attack, io, hostile; param: neighbours)",
               isolation_points, [0, 1, 2, 3, 4, 8, 16], [0, 2], preempting),
        Matrix("isolation-hv", "bystanders (a cpu and a latency domain) on 2 CPUs next to N "
               "hostile neighbours that stay (fuzz, yield-attack) or are killed (hostile), and "
               "benign cpu hogs as the reference; "
               "for the hypervisor (param: neighbours)",
               # Credit alone by default: every point boots the hypervisor; the schedsim
               # matrix `isolation` covers every policy (--sched P,P runs others here).
               hostile_points, [0, 1, 4, 16], [0, 4], ["credit"]),
        Matrix("caps", "caps.toml: the capped domain's cap (param: cap, % of one CPU)",
               caps_points, [5, 10, 20, 40, 60, 80, 100], [10, 50], capped),
        Matrix("consolidation", "consolidation.toml: two weight classes (256, 512) on 4 CPUs, "
               "credit as Xen's (variant xen) and with exact_credit = 1 (variant exact) "
               "(param: domains_per_cpu)",
               consolidation_points, [2, 4, 8, 16, 24, 32], [2, 24], weighted),
        Matrix("windows", "windows.toml: 1 s windows, N cpu domains and a latency domain on "
               "4 CPUs, Jain per window (param: domains)",
               windows_points, [128], [16], preempting),
        Matrix("simvshyp", "latency, weights, caps, scaling (16 domains) and isolation "
               "(a victim and a latency domain beside 2 yield attackers) under every policy "
               "each supports (variant: the spec; fifo never preempts and is left out), for "
               "--engine both --profile FILE (param: cpus)",
               simvshyp_points, [1, 2, 4], [2], registry.names),
    ]
}

# A test matrix: two tiny specs, for scripts/test.
def tiny_points(policies, values):
    base = load_spec("default")
    for p in policies:
        for n in values:
            s = with_policy(base, p)
            s["domain"][0]["count"] = int(n)
            s["domain"].append({"name": "lat", "workload": "latency"})
            yield Point(p, "domains", int(n), s)


# Two fixed policies: a fixture for plots/selftest, whose expected rows name them.
MATRICES["tiny"] = Matrix("tiny", "test matrix: default.toml plus a latency domain, 2 points",
                          tiny_points, [1, 3], [1, 3], ["rr", "credit"])


# --- writing a spec -----------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # TOML basic strings accept JSON's escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def toml_table(d: dict) -> list[str]:
    return [f"{k} = {toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]


def dump_spec(spec: dict) -> str:
    """The spec as TOML: top-level keys, [machine], [sched], then each [[domain]] with its
    [domain.args] and [domain.sched] (the only nesting the spec format has)."""
    out = toml_table({k: v for k, v in spec.items() if k != "domain"})
    for k, v in spec.items():
        if isinstance(v, dict):
            out += ["", f"[{k}]"] + toml_table(v)
    for d in spec.get("domain", []):
        out += ["", "[[domain]]"] + toml_table(d)
        for k, v in d.items():
            if isinstance(v, dict):
                out += [f"[domain.{k}]"] + toml_table(v)
    return "\n".join(out) + "\n"


# --- running ------------------------------------------------------------------------------


# The workloads with a Linux build (scripts/runner/src/linux.rs, `WORKLOADS`).
LINUX_WORKLOADS = {"cpu", "latency", "yield", "io", "switch", "ping", "blk", "net"}

def engine_command(engine: str, spec_path: Path, out: Path, profile=None,
                   slice_late=None, costs_flag="--slice-late-from", trace=None,
                   replay=None, holds_anywhere=False) -> list[str]:
    extra = ["--trace", str(trace)] if trace else []
    if engine == "schedsim":
        extra += ["--profile", str(profile)] if profile else []
        extra += [costs_flag, str(slice_late)] if slice_late else []
        extra += ["--replay", str(replay)] if replay else []
        extra += ["--holds-anywhere"] if holds_anywhere else []
        return [str(schedsim_binary()), str(spec_path), "--out", str(out)] + extra
    # domino, or linux: the same spec on Linux (its own scheduler, whatever the policy).
    return [str(ROOT / "scripts" / "run"), str(spec_path), "--engine", engine, "--accel", "tcg",
            "--quiet", "--out", str(out)] + extra


def trace_of(sweep_dir: Path, slug: str) -> Path | None:
    """The trace of point `slug` in the sweep in `sweep_dir` (`--trace`): its hypervisor
    run's, else its schedsim run's."""
    for engine in ("domino", "schedsim"):
        path = sweep_dir / engine / f"{slug}.trace.json"
        if path.exists():
            return path
    return None


schedsim_binary = registry.schedsim_binary


def display(path: Path) -> str:
    """`path` relative to the repository when it is inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path.resolve())


def read_records(path: Path) -> list[dict]:
    recs = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return recs


def rows_of(sweep: str, engine: str, point: Point, path: Path, status: int, wall_s: float):
    """The CSV rows of one run: one per domain group, or one `failed` row without results.

    The records are those of `abi::tool::results` (kernel/abi/src/tool/results.rs), written by schedsim
    and the runner through its types: a field they always write is indexed here, so one
    that is missing stops the sweep with its name instead of reading as 0."""
    recs = read_records(path)
    run = next((r for r in recs if r["kind"] == "run"), None)
    exit_rec = next((r for r in recs if r["kind"] == "exit"), None)
    summary = next((r for r in recs if r["kind"] == "summary"), None)
    domains = [r for r in recs if r["kind"] == "domain"]
    spec = point.spec
    cpus = run["cpus"] if run else spec.get("machine", {}).get("cpus")
    duration = run["duration_ns"] if run else 0
    # Linux runs its own scheduler whatever the point's policy: its run record names it.
    policy = run["policy"] if engine == "linux" and run else point.policy
    common = {
        "sweep": sweep, "engine": engine, "policy": policy, "cpus": cpus,
        "domains": run["domains"] if run else sum(d.get("count", 1) for d in spec["domain"]),
        "param": point.param, "value": point.value, "variant": point.variant,
        "jain": summary["jain"] if summary else "",
        "share_err_max": summary["share_err_max"] if summary else "",
        "duration_ns": duration, "status": status, "wall_s": f"{wall_s:.2f}",
        "results": display(path),
        # The other work on the host during a hypervisor run, in cores (the runner's
        # `host:` note; its exit record's host_other_load); empty for schedsim.
        "host_load": "" if (exit_rec or {}).get("host_other_load") is None
        else exit_rec["host_other_load"],
    }
    if not domains or run is None:
        return [dict(common, group="", exit=f"failed: no domain records (status {status})")]
    groups: dict[str, list[dict]] = {}
    for d in domains:
        groups.setdefault(d["group"], []).append(d)
    rows = []
    for group, ds in groups.items():
        cpu_ns = sum(d["cpu_ns"] for d in ds)
        work = sum(d["work"] for d in ds)
        machine_ns = (cpus or 1) * duration
        bad = [d["exit"] for d in ds if d["exit"] != "ok"]
        rows.append(dict(
            common,
            group=group, workload=ds[0]["workload"], count=len(ds),
            weight_sum=sum(d["weight"] for d in ds), cap=ds[0]["cap"],
            cpu_ns=cpu_ns,
            cpu_share=f"{cpu_ns / machine_ns:.6f}" if machine_ns else "",
            cpus_used=f"{cpu_ns / duration:.6f}" if duration else "",
            work=work, work_per_s=f"{work * 1e9 / duration:.1f}" if duration else "",
            # p50: the median of the group's medians; p99 and max: the worst domain's.
            wake_lat_p50_ns=int(statistics.median(d["wake_lat_p50_ns"] for d in ds)),
            wake_lat_p99_ns=max(d["wake_lat_p99_ns"] for d in ds),
            wake_lat_max_ns=max(d["wake_lat_max_ns"] for d in ds),
            exit="ok" if not bad else f"{len(bad)} of {len(ds)} {bad[0]}",
        ))
    return rows


class Progress:
    """One line that rewrites itself on a terminal; plain lines otherwise (CI logs)."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def show(self, text: str, final: bool = False):
        line = f"[{self.done:>3}/{self.total}] {time.monotonic() - self.t0:6.1f} s  {text}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        elif final:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def parse_list(text: str | None) -> list[str] | None:
    return [x for x in text.split(",") if x] if text else None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/sweep", description="Run a named matrix of experiment specs.",
        epilog="matrices: " + "; ".join(f"{m.name}: {m.about}" for m in MATRICES.values()))
    ap.add_argument("name", nargs="?", help="the matrix (see --list)")
    ap.add_argument("--engine", choices=["schedsim", "domino", "both", "linux", "all"],
                    default="schedsim",
                    help="both: schedsim and domino; all: the three; linux runs each point "
                         "once, whatever its policy (Linux's own scheduler)")
    ap.add_argument("--quick", action="store_true",
                    help="short runs (0.3 s measured) and fewer points, for tests")
    ap.add_argument("--out", help="output directory (default results/sweep-NAME)")
    ap.add_argument("--sched", help="comma-separated policies (default: the matrix's)")
    ap.add_argument("--values", help="comma-separated values of the swept parameter")
    ap.add_argument("--seconds", type=float, help="measured interval of every run")
    ap.add_argument("--profile", help="schedsim's cost profile (scripts/calibrate); "
                    "default: the ideal machine")
    ap.add_argument("--slice-late-from", metavar="DIR",
                    help="schedsim takes each point's slice lateness from the hypervisor's "
                    "run of the same point in DIR (a sweep's --out with --engine domino): "
                    "the host's load during that run (schedsim --slice-late-from)")
    ap.add_argument("--costs-from", metavar="DIR",
                    help="as --slice-late-from, for everything schedsim takes from a run "
                    "(schedsim --costs-from: kick and slice lateness, CPU stalls)")
    ap.add_argument("--holds-anywhere", action="store_true",
                    help="with --costs-from: each of the run's late slice ends held wherever "
                    "it falls, not only just after another timer fired (schedsim "
                    "--holds-anywhere)")
    ap.add_argument("--trace", action="store_true",
                    help="write each run's trace beside its results (ENGINE/POINT.trace.json; "
                    "not for linux)")
    ap.add_argument("--replay-from", metavar="DIR",
                    help="schedsim replays each point's trace from the sweep in DIR (one run "
                    "with --trace: its hypervisor's traces, else its schedsim's) instead of "
                    "running the replayed domains' workloads (schedsim --replay)")
    ap.add_argument("--list", action="store_true", help="list the matrices and their points")
    args = ap.parse_args(argv)
    if args.trace and args.engine in ("linux", "all"):
        print("scripts/sweep: --trace: the linux engine writes no trace; allowed with "
              "--engine schedsim, domino or both", file=sys.stderr)
        return 2
    replay_dir = Path(args.replay_from).resolve() if args.replay_from else None
    if replay_dir and args.engine != "schedsim":
        print("scripts/sweep: --replay-from: only schedsim replays a trace; give --engine "
              "schedsim", file=sys.stderr)
        return 2
    if replay_dir and not any(replay_dir.glob("*/*.trace.json")):
        print(f"scripts/sweep: --replay-from {display(replay_dir)}: no traces there "
              f"(expected DIR/domino/POINT.trace.json from a sweep run with --trace)",
              file=sys.stderr)
        return 2
    if args.costs_from and args.slice_late_from:
        print("scripts/sweep: give --costs-from or --slice-late-from, not both", file=sys.stderr)
        return 2
    if args.holds_anywhere and not args.costs_from:
        print("scripts/sweep: --holds-anywhere needs --costs-from DIR (the run whose "
              "slice ends it holds)", file=sys.stderr)
        return 2
    costs_flag = "--costs-from" if args.costs_from else "--slice-late-from"
    costs_dir = args.costs_from or args.slice_late_from

    if args.list or not args.name:
        for m in MATRICES.values():
            print(f"{m.name:10} {m.about}; policies {','.join(m.default_policies())}; "
                  f"values {m.values} (--quick: {m.quick_values})")
        return 0 if args.list else 2
    matrix = MATRICES.get(args.name)
    if matrix is None:
        print(f"scripts/sweep: unknown sweep {args.name!r}; allowed: {', '.join(MATRICES)}",
              file=sys.stderr)
        return 2
    policies = parse_list(args.sched) or matrix.default_policies()
    values = parse_list(args.values) or (matrix.quick_values if args.quick else matrix.values)
    try:
        values = [int(v) for v in values]
    except ValueError:
        print(f"scripts/sweep: --values: {args.values!r} is not a list of integers", file=sys.stderr)
        return 2
    engines = {"both": ["schedsim", "domino"],
               "all": ["schedsim", "domino", "linux"]}.get(args.engine, [args.engine])
    out = Path(args.out or ROOT / "results" / f"sweep-{matrix.name}").resolve()

    points = list(matrix.points(policies, values))
    for p in points:
        if args.seconds is not None:
            p.spec["duration_ms"] = max(1, round(args.seconds * 1000))
        elif args.quick:
            p.spec["duration_ms"] = 300
        if args.quick:
            p.spec["warmup_ms"] = min(p.spec.get("warmup_ms", 500), 100)
        p.spec["name"] = f"{matrix.name}-{p.slug}"

    # Each schedsim point takes its costs (and its trace) from its own hypervisor run: a point
    # whose run is missing would run on the profile alone (or its own workloads) and be
    # drawn as calibrated (or replayed), with only a line on stderr to say otherwise.
    if "schedsim" in engines and (costs_dir or replay_dir):
        missing = []
        for p in points:
            run = Path(costs_dir).resolve() / "domino" / f"{p.slug}.jsonl" if costs_dir else None
            if run is not None and not run.exists():
                missing.append(f"{costs_flag}: no hypervisor run {display(run)}")
            if replay_dir and trace_of(replay_dir, p.slug) is None:
                missing.append(f"--replay-from: no trace of {p.slug} in {display(replay_dir)}")
        if missing:
            for m in missing:
                print(f"scripts/sweep: {m}", file=sys.stderr)
            print(f"scripts/sweep: {len(missing)} of the points' runs or traces missing; give "
                  f"the directory of a sweep of the same matrix and values (each point's "
                  f"ENGINE/POINT.jsonl, with --trace for --replay-from)", file=sys.stderr)
            return 2

    # Linux has one scheduler: each point once (the first policy's), not once per policy;
    # points with a workload that has no Linux build (the hypervisor's own tests) are left out.
    linux_points, seen, no_linux = [], set(), set()
    for p in points:
        missing = {d["workload"] for d in p.spec["domain"]} - LINUX_WORKLOADS
        if missing:
            no_linux |= missing
        elif (p.param, p.value, p.variant) not in seen:
            seen.add((p.param, p.value, p.variant))
            linux_points.append(p)
    if "linux" in engines and no_linux:
        print(f"scripts/sweep: linux: points with {', '.join(sorted(no_linux))} left out "
              f"(no Linux build)", file=sys.stderr)
    rows, failures = [], 0
    progress = Progress(sum(len(linux_points if e == "linux" else points) for e in engines))
    for engine in engines:
        (out / engine).mkdir(parents=True, exist_ok=True)
        for p in linux_points if engine == "linux" else points:
            spec_path = out / engine / f"{p.slug}.toml"
            res_path = out / engine / f"{p.slug}.jsonl"
            spec_path.write_text(f"# written by scripts/sweep {matrix.name}\n" + dump_spec(p.spec))
            res_path.unlink(missing_ok=True)
            progress.show(f"{engine} {p.slug}")
            t0 = time.monotonic()
            late = None
            if costs_dir and engine == "schedsim":
                late = Path(costs_dir).resolve() / "domino" / f"{p.slug}.jsonl"
            trace = out / engine / f"{p.slug}.trace.json" if args.trace else None
            replay = None
            if replay_dir:
                replay = trace_of(replay_dir, p.slug)
            command = engine_command(engine, spec_path, res_path,
                                     Path(args.profile).resolve() if args.profile else None,
                                     late, costs_flag, trace, replay,
                                     args.holds_anywhere)
            proc = subprocess.run(command, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wall = time.monotonic() - t0
            progress.done += 1
            if proc.returncode != 0:
                failures += 1
                (out / engine / f"{p.slug}.log").write_text(proc.stdout)
                progress.show(f"{engine} {p.slug}: exit {proc.returncode} "
                              f"(log: {display(out / engine / (p.slug + '.log'))})",
                              final=True)
            elif not progress.tty:
                replayed = f", replayed {display(replay)}" if replay else ""
                progress.show(f"{engine} {p.slug}: exit 0, {wall:.1f} s{replayed}", final=True)
            rows += rows_of(matrix.name, engine, p, res_path, proc.returncode, wall)
    progress.show(f"{matrix.name}: {len(rows)} rows, {failures} failed runs", final=True)

    csv_path = out / f"{matrix.name}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        w.writeheader()
        w.writerows(rows)
    print(csv_path)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
