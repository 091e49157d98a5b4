#!/usr/bin/env python3
"""Isolation figure: a victim cpu domain's CPU time as neighbours of one kind are added,
one panel per kind, one line per policy (and engine, Linux's included: it has no hostile
panel line, since hostile tenants have no Linux build), with the victim's fair share.

    plots/plot isolation SWEEP.csv... --out FIG.png [--victim victim]

Input: the CSV of `scripts/sweep isolation` (kinds: hog = cpu-bound neighbours, yield-attack
= neighbours that yield just before each 10 ms accounting tick, io = burst/block, hostile =
tenants that execute a privileged instruction and must be killed). The fair share is
min(1, cpus / (1 + N)) CPUs: equal weights, killed tenants count for nothing, and io
neighbours use less than their share, so the victim may get more than the line there.
"""

import argparse
from collections import defaultdict

from common import ENGINE_STYLE, colour, plt, read_csv, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--victim", default="victim", help="the victim's group name")
    args = ap.parse_args()
    rows = [r for p in args.csv for r in read_csv(p) if r["group"] == args.victim]
    if not rows:
        raise SystemExit(f"no group {args.victim!r} in {' '.join(args.csv)}")
    kinds = sorted({r["variant"] for r in rows}, key=str)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds), 3.8), sharey=True,
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        series = defaultdict(dict)
        for r in rows:
            if r["variant"] == kind:
                series[(r["engine"], r["policy"])][r["value"]] = r
        ns = sorted({n for pts in series.values() for n in pts})
        cpus = rows[0]["cpus"]
        fair = [1.0 if kind == "hostile" else min(1.0, cpus / (1 + n)) for n in ns]
        ax.plot(ns, fair, color="black", linewidth=1, linestyle=":", label="fair share")
        for (engine, policy), pts in sorted(series.items()):
            xs = sorted(pts)
            ax.plot(xs, [pts[x]["cpus_used"] for x in xs], color=colour(policy),
                    label=f"{policy} ({engine})", **ENGINE_STYLE.get(engine, {}))
        ax.set_title(f"neighbours: {kind}", fontsize=10)
        ax.set_xlabel("neighbours")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("victim's CPU time (CPUs)")
    axes[0][0].set_ylim(0, 1.1)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    linux = any(r["engine"] == "linux" for r in rows)
    save(fig, args.out, f"A cpu-bound victim on {rows[0]['cpus']} CPUs (scripts/sweep "
         "isolation). Dotted: its fair share, min(1, cpus / (1 + N)) CPUs; hostile "
         "tenants are killed, so there it is 1 CPU."
         + (" Linux (its fair scheduler, every domain a cgroup) runs the hog, yield-attack "
            "and io cases; hostile tenants test the hypervisor and have no Linux build."
            if linux else ""))


if __name__ == "__main__":
    main()
