#!/usr/bin/env python3
"""Proportional-share figure: each domain's CPU share against its weight, with the ideal
line weight / sum of weights, one marker set per policy (and engine).

    plots/plot shares (SWEEP.csv | RESULTS.jsonl)... --out FIG.png [--group G]

Input: the CSV of `scripts/sweep weights` (its `results` column points at each run's JSON
lines, which hold the per-domain records), or results files directly. Share = the domain's
cpu_ns / (cpus × duration), i.e. a fraction of the whole machine.
"""

import argparse
from pathlib import Path

from common import ENGINE_STYLE, colour, plt, read_csv, read_jsonl, results_path, save


def runs_from(paths):
    """(engine, policy, cpus, duration_ns, domain records) of every run named by `paths`."""
    files = []
    for p in paths:
        if p.endswith(".csv"):
            seen = set()
            for r in read_csv(p):
                f = results_path(r, p)
                if f not in seen:
                    seen.add(f)
                    files.append(f)
        else:
            files.append(Path(p))
    for f in files:
        recs = read_jsonl(f)
        run = next(r for r in recs if r["kind"] == "run")
        doms = [r for r in recs if r["kind"] == "domain"]
        yield run["engine"], run["policy"], run["cpus"], run["duration_ns"], doms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", help="only this domain group (default: cpu-bound domains)")
    args = ap.parse_args()

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    wmax = 0
    total_w = None
    runs = list(runs_from(args.inputs))
    n = len(runs)
    for i, (engine, policy, cpus, dur, doms) in enumerate(runs):
        doms = [d for d in doms if (d["group"] == args.group if args.group
                                    else d["workload"] == "cpu")]
        total_w = sum(d["weight"] for d in doms)
        ws = [d["weight"] for d in doms]
        shares = [d["cpu_ns"] / (cpus * dur) for d in doms]
        wmax = max(wmax, max(ws))
        # Nudge each run's markers sideways a little so that they do not hide each other.
        dx = (i - (n - 1) / 2) * 0.08
        st = ENGINE_STYLE.get(engine, {})
        ax.plot([w + dx for w in ws], shares, linestyle="none", marker=st.get("marker", "o"),
                color=colour(policy), markerfacecolor="none" if engine == "domino" else None,
                label=f"{policy} ({engine})")
    if total_w:
        ax.plot([0.5, wmax + 0.5], [0.5 / total_w, (wmax + 0.5) / total_w], color="black",
                linewidth=1, label="ideal: weight / Σ weights")
    ax.set_xlabel("weight")
    ax.set_ylabel("share of the machine (cpu_ns / (cpus × duration))")
    ax.set_title("Proportional share")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    linux = any(engine == "linux" for engine, *_ in runs)
    save(fig, args.out, "One marker per domain and run; hollow squares: the hypervisor, "
         "filled circles: schedsim" + ("; triangles: Linux (cpu.weight; its own clock and "
                                      "interval, README \"Linux as a baseline\")" if linux else "")
         + ". On the line = exactly its weight's share.")


if __name__ == "__main__":
    main()
