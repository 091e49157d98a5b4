#!/usr/bin/env python3
"""Simulator against hypervisor: the same spec's per-domain CPU shares from schedsim and
from Domino, side by side, one panel per policy; with `--calibrated`, also schedsim on a
cost profile, and a second row with the latency domains' p50 and p99 wake-up latency.

    plots/plot simvshyp (SWEEP.csv | SCHEDSIM.jsonl DOMINO.jsonl)... \
        [--calibrated CALIBRATED.jsonl...] --out FIG.png

Input: the CSV of a sweep run with `--engine both` (its `results` column names each run's
JSON lines), or pairs of results files. Runs are paired by policy and spec name. Each bar is
a domain's cpu_ns / (cpus × duration); the panel title gives the largest difference in
percentage points (issue 6 asks for agreement within 5 points under credit and bvt).
`--calibrated` takes results of `schedsim --profile FILE` (their engine is `schedsim` too,
hence a flag of their own), paired the same way. The latency row (shown when a paired run
has a domain that woke up) is log-scaled; issue 15's target is p50 and p99 within 30% (or
the same log2 bucket) of the hypervisor's.

The validation sweep (`scripts/sweep simvshyp`, issue 15) draws its breadth instead: given
CSVs of that sweep (the hypervisor's, `--engine domino`, and schedsim's on the profile as
`--calibrated`; optionally schedsim's on the ideal machine, `--engine schedsim`, as a
positional CSV too), one column per spec: on top the largest per-domain share difference
from the hypervisor (points of the machine) per policy and CPU count, below the latency
domains' p50 and p99 wake-up latency as a ratio simulated / hypervisor (log; the band is
the 30% target). A hypervisor run that failed is marked with a cross at the axis.
"""

import argparse
from pathlib import Path

import numpy as np

from common import colour, on_target, plt, read_csv, read_jsonl, results_path, save


def load(inputs, engine=None):
    files = []
    for p in inputs:
        if p.endswith(".csv"):
            files += list(dict.fromkeys(results_path(r, p) for r in read_csv(p, keep_failed=True)))
        else:
            files.append(Path(p))
    runs = {}
    for f in files:
        recs = read_jsonl(f)
        run = next(r for r in recs if r["kind"] == "run")
        doms = [r for r in recs if r["kind"] == "domain"]
        runs[(run["policy"], run["name"], engine or run["engine"])] = (run, doms)
    return runs


def sweep_rows(inputs):
    """The rows of the simvshyp sweep CSVs among `inputs` (none if there is none)."""
    rows = []
    for p in inputs:
        if p.endswith(".csv"):
            rows += [dict(r, csv=p) for r in read_csv(p, keep_failed=True) if r.get("sweep") == "simvshyp"]
    return rows


def breadth(args):
    """The validation sweep's figure: one column per spec (see the module's doc)."""
    hyp_rows = [r for r in sweep_rows(args.inputs) if r["engine"] == "domino"]
    ideal_rows = [r for r in sweep_rows(args.inputs) if r["engine"] == "schedsim"]
    cal_rows = sweep_rows(args.calibrated)
    if not hyp_rows or not cal_rows:
        raise SystemExit("simvshyp sweep: need the hypervisor's CSV (--engine domino) and "
                         "the calibrated one (--calibrated)")

    def runs_of(rows):
        out = {}
        for r in rows:
            key = (r["variant"], r["policy"], int(r["value"]))
            if key in out:
                continue
            if r["status"] != 0 or not r["group"]:
                out[key] = None
                continue
            recs = read_jsonl(results_path(r, r["csv"]))
            run = next(x for x in recs if x["kind"] == "run")
            doms = {d["name"]: d for d in recs if d["kind"] == "domain"}
            out[key] = (run, doms, r.get("host_load", ""))
        return out

    hyp, cal, ideal = runs_of(hyp_rows), runs_of(cal_rows), runs_of(ideal_rows)
    specs = list(dict.fromkeys(k[0] for k in hyp))
    cpus_all = sorted({k[2] for k in hyp})
    policies = [p for p in registry_order() if any(k[1] == p for k in hyp)]
    fig, axes = plt.subplots(2, len(specs), figsize=(3.6 * len(specs), 7.2), squeeze=False)
    markers = {1: "o", 2: "s", 4: "^", 8: "D"}
    loads = []

    def share_err(h, s):
        (hrun, hd, _), (srun, sd, _) = h, s
        total = lambda run: run["cpus"] * run["duration_ns"]
        return max(100 * abs(hd[n]["cpu_ns"] / total(hrun) - sd[n]["cpu_ns"] / total(srun))
                   for n in hd if n in sd)

    for col, spec in enumerate(specs):
        top, bottom = axes[0][col], axes[1][col]
        pols = [p for p in policies if any(k[0] == spec and k[1] == p for k in hyp)]
        width = 0.8 / len(cpus_all)
        woke = False
        for i, p in enumerate(pols):
            for j, c in enumerate(cpus_all):
                key = (spec, p, c)
                if key not in hyp:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                h, s, z = hyp[key], cal.get(key), ideal.get(key)
                if h is None or s is None:
                    top.plot(x, 0.02, "x", color=colour(p), ms=7)
                    continue
                if h[2] != "":
                    loads.append(float(h[2]))
                err = share_err(h, s)
                line = (f"{spec:10} {p:8} {c} CPU  share diff {err:5.2f} points"
                        + (f" (ideal {share_err(h, z):5.2f})" if z is not None else "")
                        + f"  host load {h[2]}")
                top.bar(x, max(err, 0.02), width, color=colour(p),
                        alpha=1.0 if c == 2 else 0.55, edgecolor="0.2")
                if z is not None:
                    top.plot(x, max(share_err(h, z), 0.02), "_", color="k", ms=8, mew=1.5)
                lat = [n for n, d in h[1].items() if d["workload"] == "latency"
                       and d["wakeups"] > 0 and n in s[1]]
                for n in lat:
                    woke = True
                    for q, face in (("p50", colour(p)), ("p99", "none")):
                        hv, sv = h[1][n][f"wake_lat_{q}_ns"], s[1][n][f"wake_lat_{q}_ns"]
                        ratio = max(sv, 1) / max(hv, 1)
                        bottom.plot(x, min(max(ratio, 1e-3), 1e3), markers.get(c, "o"),
                                    color=colour(p), mfc=face, ms=6)
                        line += (f"  {n} {q} {hv / 1e3:.1f}/{sv / 1e3:.1f} µs "
                                 f"({'on' if on_target(hv, sv) else 'off'})")
                print(line)
        for ax in (top, bottom):
            ax.set_xticks(range(len(pols)), pols, fontsize=8)
            ax.set_xlim(-0.6, len(pols) - 0.4)
            ax.grid(True, axis="y", alpha=0.3)
        top.axhline(2, color="k", ls="--", lw=0.8)
        top.set_yscale("log")
        top.set_ylim(0.02, 60)
        top.set_title(f"{spec}: largest share difference", fontsize=9)
        if col == 0:
            top.set_ylabel("points of the machine (log)")
            bottom.set_ylabel("simulated / hypervisor latency (log)")
        if woke:
            bottom.set_yscale("log")
            bottom.set_ylim(1e-3, 1e3)
            bottom.axhspan(0.7, 1.3, color="0.85", zorder=0)
            bottom.axhline(1, color="k", lw=0.6)
            bottom.set_title(f"{spec}: wake-up latency p50 (filled), p99 (open)", fontsize=9)
        else:
            bottom.set_axis_off()
            bottom.text(0.5, 0.5, "no domain that wakes up", ha="center", va="center",
                        transform=bottom.transAxes, fontsize=9, color="0.4")
    handles = [plt.Line2D([], [], marker=markers.get(c, "o"), ls="", color="0.3",
                          label=f"{c} CPU{'s' if c > 1 else ''}") for c in cpus_all]
    handles.append(plt.Line2D([], [], marker="_", ls="", color="k", ms=8, mew=1.5,
                              label="ideal schedsim"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles))
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    load = (f"other host work during the hypervisor runs {min(loads):.1f}–{max(loads):.1f} "
            f"cores (median {sorted(loads)[len(loads) // 2]:.1f}) on 2" if loads
            else "host load not recorded")
    save(fig, args.out, f"Calibrated schedsim ({args.caption_profile}) against the "
         "hypervisor under QEMU TCG, one run each. Top: bars per policy, one per CPU count (1, 2, "
         "4 from the left; 2 CPUs solid), the dashed line is the 2-point target; black ticks: "
         f"the ideal machine. Bottom: latency ratio, the band is ±30%. {load}: the latency "
         "carries that load, shares are the robust part.")


def registry_order():
    import registry
    return registry.names()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--calibrated", nargs="+", default=[],
                    help="results of schedsim --profile FILE, paired like the others")
    ap.add_argument("--out", required=True)
    ap.add_argument("--caption-profile", default="scripts/profiles/tcg.toml",
                    help="what the calibrated runs ran on, for the sweep figure's caption")
    args = ap.parse_args()
    if sweep_rows(args.inputs):
        return breadth(args)
    runs = load(args.inputs)
    runs.update(load(args.calibrated, engine="calibrated"))
    pairs = sorted({(p, n) for (p, n, e) in runs
                    if (p, n, "schedsim") in runs and (p, n, "domino") in runs})
    if not pairs:
        raise SystemExit("no spec was run on both engines (schedsim and domino)")
    woke = any(d["wakeups"] > 0 for (p, n) in pairs for d in runs[(p, n, "domino")][1])
    rows = 2 if woke else 1
    fig, axes = plt.subplots(rows, len(pairs), figsize=(5.2 * len(pairs), 4 * rows),
                             squeeze=False)
    styles = {
        "schedsim": dict(label="schedsim (ideal)"),
        "calibrated": dict(alpha=0.75, hatch="..", edgecolor="0.2",
                           label="schedsim (cost profile)"),
        "domino": dict(alpha=0.45, hatch="//", edgecolor="0.3", label="domino (TCG)"),
    }
    for col, (policy, name) in enumerate(pairs):
        ax = axes[0][col]
        engines = [e for e in ("schedsim", "calibrated", "domino") if (policy, name, e) in runs]
        shares, doms_of = {}, {}
        for engine in engines:
            run, doms = runs[(policy, name, engine)]
            doms_of[engine] = {d["name"]: d for d in doms}
            shares[engine] = {d["name"]: d["cpu_ns"] / (run["cpus"] * run["duration_ns"])
                              for d in doms}
        names = [n for n in shares["schedsim"] if all(n in shares[e] for e in engines)]
        x = np.arange(len(names))
        w = 0.8 / len(engines)
        for i, engine in enumerate(engines):
            ax.bar(x - 0.4 + w * (i + 0.5), [shares[engine][n] for n in names], w,
                   color=colour(policy), **styles[engine])
        title = [f"{name}", f"{policy}: largest difference"]
        for engine in engines[:-1]:
            diff = max(abs(shares[engine][n] - shares["domino"][n]) for n in names)
            title.append(f"{'ideal' if engine == 'schedsim' else 'calibrated'} "
                         f"{100 * diff:.1f} points")
        ax.set_xticks(x, names, rotation=45 if len(names) > 10 else 0, fontsize=8)
        ax.set_title(title[0] + "\n" + title[1] + " " + ", ".join(title[2:]), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylabel("share of the machine")
        if rows == 2:
            ax = axes[1][col]
            lat = [n for n in names if doms_of["domino"][n]["wakeups"] > 0]
            labels = [f"{n} {q}" for n in lat for q in ("p50", "p99")]
            x = np.arange(len(labels))
            for i, engine in enumerate(engines):
                vals = [max(doms_of[engine][n][f"wake_lat_{q}_ns"], 1) / 1e3
                        for n in lat for q in ("p50", "p99")]
                ax.bar(x - 0.4 + w * (i + 0.5), vals, w, color=colour(policy),
                       **styles[engine])
            ax.set_yscale("log")
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel("wake-up latency (µs, log)")
            ax.set_title(f"{name}, {policy}: wake-up latency (0 drawn at 1 ns)", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Solid: schedsim on the ideal machine (switches and IPIs cost "
         "nothing); dotted: schedsim on a cost profile (scripts/calibrate); hatched: the "
         "hypervisor under QEMU TCG. Same spec file for all.")


if __name__ == "__main__":
    main()
