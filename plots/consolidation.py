#!/usr/bin/env python3
"""Consolidation figure: the largest weight-class share error against domains per CPU, one
line per policy (credit twice: as Xen wrote it and with exact_credit = 1), both engines.

    plots/plot consolidation SWEEP.csv... --out FIG.png

Input: the CSV of `scripts/sweep consolidation` (consolidation.toml: half the domains at
weight 256, half at 512, cpu-bound, 4 CPUs). A class's share is its CPU time over the CPU
time all domains got; it should be the class's weights over Σw (2/3 for the heavy class).
The error is the larger of the two classes' |share − w/Σw|, in percentage points.
"""

import argparse
from collections import defaultdict

from common import ENGINE_STYLE, colour, plt, read_csv, save

# credit's variants: Xen's rounding and clamps, or exact shares (a lighter shade, dotted).
VARIANT_STYLE = {"exact": dict(alpha=0.55, marker="^")}


def class_errors(rows):
    """{(engine, policy, variant, domains_per_cpu): largest class error in points}."""
    runs = defaultdict(list)
    for r in rows:
        if r["group"] != "" and r["status"] == 0:
            runs[(r["engine"], r["policy"], r["variant"], r["value"])].append(r)
    out = {}
    for key, groups in runs.items():
        cpu = sum(g["cpu_ns"] for g in groups)
        weight = sum(g["weight_sum"] for g in groups)
        if cpu and weight:
            out[key] = max(abs(100 * (g["cpu_ns"] / cpu - g["weight_sum"] / weight))
                           for g in groups)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = [r for p in args.csv for r in read_csv(p)]
    errs = class_errors(rows)
    if not errs:
        raise SystemExit(f"no successful runs in {' '.join(args.csv)}")
    series = defaultdict(dict)
    for (engine, policy, variant, x), e in errs.items():
        series[(engine, policy, variant)][x] = e
    fig, ax = plt.subplots(figsize=(8.2, 4.4))
    ax.axhline(1.0, color="black", linewidth=1, linestyle=":", label="1 point")
    for (engine, policy, variant), pts in sorted(series.items()):
        xs = sorted(pts)
        style = dict(ENGINE_STYLE.get(engine, {}))
        style.update(VARIANT_STYLE.get(variant, {}))
        name = policy if variant in ("", None) else f"{policy} {variant}"
        ax.plot(xs, [pts[x] for x in xs], color=colour(policy), label=f"{name} ({engine})",
                **style)
    ax.set_xlabel("domains per CPU (4 CPUs; half weight 256, half 512)")
    ax.set_ylabel("largest class share error (points)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title("Weighted shares under consolidation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, args.out, "Heavy class should get 2/3 of the CPU time. credit xen: Xen's rounding "
         "and clamps; credit exact: exact_credit = 1. 5 ms slices for every policy.")


if __name__ == "__main__":
    main()
