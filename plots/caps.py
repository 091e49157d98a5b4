#!/usr/bin/env python3
"""Caps figure: the capped domain's CPU time against its cap, with the cap line.

    plots/plot caps SWEEP.csv... --out FIG.png [--group capped]

Input: the CSV of `scripts/sweep caps` (caps.toml: one capped cpu domain among three
uncapped ones on 2 CPUs). A cap is a % of one CPU; the domain should get min(cap, its fair
share), and never more than its cap.
"""

import argparse
from collections import defaultdict

from common import ENGINE_STYLE, colour, plt, read_csv, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", default="capped")
    args = ap.parse_args()
    rows = [r for p in args.csv for r in read_csv(p) if r["group"] == args.group]
    if not rows:
        raise SystemExit(f"no group {args.group!r} in {' '.join(args.csv)}")
    fig, ax = plt.subplots(figsize=(6, 4.4))
    series = defaultdict(dict)
    for r in rows:
        series[(r["engine"], r["policy"])][r["cap"]] = r
    caps = sorted({r["cap"] for r in rows})
    fair = rows[0]["cpus"] / rows[0]["domains"]
    ax.plot(caps, [c / 100 for c in caps], color="black", linewidth=1, label="cap")
    ax.axhline(fair, color="0.5", linewidth=1, linestyle=":", label="fair share")
    for (engine, policy), pts in sorted(series.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x]["cpus_used"] for x in xs], color=colour(policy),
                label=f"{policy} ({engine})", **ENGINE_STYLE.get(engine, {}))
    ax.set_xlabel("cap (% of one CPU)")
    ax.set_ylabel("capped domain's CPU time (CPUs)")
    ax.set_title("Caps")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Below both lines is correct; above the cap line is a cap violation.")


if __name__ == "__main__":
    main()
