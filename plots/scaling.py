#!/usr/bin/env python3
"""Scaling figure: aggregate throughput and Jain's fairness index against the number of
cpu-bound domains, one line per policy (and per engine when the CSV has both).

    plots/plot scaling SWEEP.csv [SWEEP.csv...] --out FIG.png

Input: the CSV of `scripts/sweep scaling`. Throughput is the cpu group's work per second,
divided by the same policy's and engine's throughput at domains = cpus (the docs/DESIGN.md
target: 128 domains on N CPUs keep >= 99% of what N domains get), so the two engines' work
units (µs of CPU in schedsim, ~13 µs steps in the hypervisor) share one axis.
"""

import argparse
import sys
from collections import defaultdict

from common import ENGINE_STYLE, colour, plt, read_csv, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = [r for path in args.csv for r in read_csv(path)
            if r["workload"] == "cpu" and r["param"] == "domains"]
    series = defaultdict(dict)  # (engine, policy) -> {domains: row}
    for r in rows:
        series[(r["engine"], r["policy"])][r["value"]] = r

    fig, (ax_t, ax_j) = plt.subplots(1, 2, figsize=(10, 4.2))
    by_best = []  # series without a point at domains = CPUs, normalised by their best
    for (engine, policy), pts in sorted(series.items()):
        xs = sorted(pts)
        cpus = pts[xs[0]]["cpus"]
        ref = pts.get(cpus)
        label = f"{policy} ({engine})"
        if ref is None:
            ref = max(pts.values(), key=lambda r: r["work_per_s"])
            by_best.append(label)
            label += ", / its best"
        style = dict(ENGINE_STYLE.get(engine, {}), color=colour(policy), label=label)
        ax_t.plot(xs, [pts[x]["work_per_s"] / ref["work_per_s"] for x in xs], **style)
        ax_j.plot(xs, [pts[x]["jain"] for x in xs], **style)
    cpus = rows[0]["cpus"]
    for ax in (ax_t, ax_j):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cpu-bound domains")
        ax.grid(True, alpha=0.3)
        ax.axvline(cpus, color="0.6", linewidth=0.8, linestyle=":")
    ax_t.set_ylabel(f"aggregate work / work at {cpus} domains"
                    + (" (or its best)" if by_best else ""))
    if by_best:
        print(f"scaling: no point at {cpus} domains for {', '.join(by_best)}: normalised by "
              f"its best point (the legend says so)", file=sys.stderr)
    ax_t.set_title(f"Aggregate throughput on {cpus} CPUs")
    ax_t.set_ylim(0, max([1.15] + [max(line.get_ydata()) + 0.05 for line in ax_t.lines]))
    ax_j.set_ylabel("Jain's index of work / weight")
    ax_j.set_title("Fairness")
    ax_j.set_ylim(min(0.99, min(r["jain"] for r in rows) - 0.005), 1.002)
    ax_j.legend(fontsize=8, loc="lower left")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Each point is one run (scripts/sweep scaling). Left: below "
         f"{cpus} domains CPUs stay idle, so throughput is lower by design. "
         "Right: 1.0 = every domain got the same work. Dashed (domino, QEMU TCG): emulated CPUs "
         "share the host's cores, so its throughput is noisy and host-bound.")


if __name__ == "__main__":
    main()
