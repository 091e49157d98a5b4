#!/usr/bin/env python3
"""How often schedsim agrees with the hypervisor, beside how often the hypervisor agrees with
itself: the latency domain's p50 and p99 wake-up latency on target (issue 15's: within 30%,
or the same log2 bucket) per policy.

    plots/plot agreement RUN_DIR... [--table TABLE.csv] --out FIG.png
    plots/plot agreement --from TABLE.csv --out FIG.png

Each RUN_DIR is one hypervisor run: `hyp.jsonl` (`scripts/run SPEC --out RUN_DIR/hyp.jsonl`)
and any schedsim results of that same run beside it, `SOURCE.jsonl` or `SOURCE-ANYTHING.jsonl`
(for instance `calibrated-s1.jsonl` from `schedsim SPEC --costs-from RUN_DIR/hyp.jsonl
--seed 1`, `replay-s1.jsonl` with `--replay` of the run's trace as well): SOURCE names the
bar. The hypervisor against itself takes every ordered pair of two different runs of the same
spec, policy and CPU count (run A's figure as the target, run B's as the guess); a schedsim
source takes each of its files against its own run. A short run's p99 is its latency
domain's twentieth-longest wait or so: where the hypervisor does not reproduce its own p99,
no model of it can be held to that target run by run. `--table` writes one row per results
file (run, policy, source, p50, p99) and `--from` draws from such a table (the committed
data: plots/figures/data/agreement.csv).
"""

import argparse
import csv
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import colour, on_target, plt, read_jsonl, save


def latency_domain(path: Path) -> tuple[dict, dict] | None:
    """The `run` record and the first `latency` domain's record of a results file."""
    recs = read_jsonl(path)
    run = next((r for r in recs if r.get("kind") == "run"), None)
    lat = next((r for r in recs if r.get("kind") == "domain" and r.get("workload") == "latency"),
               None)
    return (run, lat) if run and lat else None


def collect(dirs: list[str]) -> list[dict]:
    rows = []
    for d in dirs:
        d = Path(d)
        hyp = latency_domain(d / "hyp.jsonl")
        if hyp is None:
            raise SystemExit(f"{d}/hyp.jsonl: no run record or no latency domain (expected a "
                             "hypervisor run of a spec with a `latency` domain)")
        key = (hyp[0]["name"], hyp[0]["policy"], hyp[0]["cpus"])
        for f in sorted(d.glob("*.jsonl")):
            got = latency_domain(f)
            if got is None:
                continue
            source = "hypervisor" if f.name == "hyp.jsonl" else f.stem.split("-")[0]
            rows.append({"run": str(d), "spec": key[0], "policy": key[1], "cpus": key[2],
                         "source": source, "p50_ns": got[1]["wake_lat_p50_ns"],
                         "p99_ns": got[1]["wake_lat_p99_ns"]})
    return rows


def agreement(rows: list[dict]) -> dict:
    """{(policy, source): {"p50": (hits, n), "p99": (hits, n)}}."""
    hyp = {r["run"]: r for r in rows if r["source"] == "hypervisor"}
    out = defaultdict(lambda: {"p50": [0, 0], "p99": [0, 0]})
    groups = defaultdict(list)
    for r in hyp.values():
        groups[(r["spec"], r["policy"], r["cpus"])].append(r)
    for (_, policy, _), runs in groups.items():
        for a, b in itertools.permutations(runs, 2):
            for q in ("p50", "p99"):
                c = out[(policy, "hypervisor")][q]
                c[0] += on_target(int(a[f"{q}_ns"]), int(b[f"{q}_ns"]))
                c[1] += 1
    for r in rows:
        if r["source"] == "hypervisor" or r["run"] not in hyp:
            continue
        for q in ("p50", "p99"):
            c = out[(r["policy"], r["source"])][q]
            c[0] += on_target(int(hyp[r["run"]][f"{q}_ns"]), int(r[f"{q}_ns"]))
            c[1] += 1
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", help="run directories (hyp.jsonl and schedsim results)")
    ap.add_argument("--from", dest="table", help="a table written with --table, instead")
    ap.add_argument("--table", dest="write", help="write the collected table (CSV) here")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if bool(a.runs) == bool(a.table):
        ap.error("give run directories or --from TABLE.csv (one of the two)")
    if a.table:
        with open(a.table, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = collect(a.runs)
    if a.write:
        with open(a.write, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    stats = agreement(rows)
    policies = sorted({p for p, _ in stats})
    sources = ["hypervisor"] + sorted({s for _, s in stats} - {"hypervisor"})
    for p in policies:
        cells = []
        for s in sources:
            c = stats.get((p, s))
            if c:
                cells.append(f"{s} p50 {c['p50'][0]}/{c['p50'][1]} p99 {c['p99'][0]}/{c['p99'][1]}")
        print(f"{p:8} " + " | ".join(cells))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / len(sources)
    hatches = ["", "//", "..", "xx", "\\\\"]
    for ax, q in zip(axes, ("p50", "p99")):
        x = np.arange(len(policies))
        for i, s in enumerate(sources):
            share = [100.0 * stats[(p, s)][q][0] / stats[(p, s)][q][1]
                     if (p, s) in stats and stats[(p, s)][q][1] else np.nan for p in policies]
            ax.bar(x + (i - (len(sources) - 1) / 2) * width, share, width,
                   color=[colour(p) for p in policies], alpha=1.0 if i == 0 else 0.55,
                   hatch=hatches[i % len(hatches)], edgecolor="black", linewidth=0.5,
                   label=s if s != "hypervisor" else "hypervisor against itself")
        ax.set_xticks(x, policies)
        ax.set_title(f"the latency domain's {q}: on target")
        ax.set_ylim(0, 105)
        ax.axhline(100, color="0.6", lw=0.8)
    axes[0].set_ylabel("% of comparisons")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(sources), fontsize=8)
    fig.subplots_adjust(top=0.82, bottom=0.16)
    runs = len({r["run"] for r in rows})
    save(fig, a.out, f"{runs} hypervisor runs. On target: within 30%, or the same log2 bucket. "
         "The hypervisor against itself: every ordered pair of two runs of one spec and policy; "
         "each schedsim source: each of its results against its own run. Colour: policy; "
         "hatch: source.")


if __name__ == "__main__":
    main()
