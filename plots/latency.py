#!/usr/bin/env python3
"""Latency figure: wake-up latency of the latency-sensitive domain among cpu hogs, one curve
per policy (and engine).

    plots/plot latency SWEEP.csv... --out FIG.png [--workload latency]

Input: the CSV of `scripts/sweep latency`. The results hold three points of each domain's
wake-up latency distribution (p50, p99, max), not every sample, so the curves are step
approximations of the CDF through exactly those points: 50% of wake-ups waited at most
p50, 99% at most p99, 100% at most max. Nothing between them is measured. When the matrix
has several hog counts, each gets its own curve.
"""

import argparse

from common import ENGINE_STYLE, colour, plt, read_csv, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workload", default="latency", help="the group's workload")
    args = ap.parse_args()
    rows = [r for p in args.csv for r in read_csv(p) if r["workload"] == args.workload]
    if not rows:
        raise SystemExit(f"no {args.workload} group in {' '.join(args.csv)}")
    several = len({r["value"] for r in rows}) > 1

    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    floor_us = 1.0  # log axis: a latency of 0 is drawn at 1 µs
    for r in sorted(rows, key=lambda r: (r["engine"], r["policy"], r["value"])):
        raw_us = [r[k] / 1000 for k in ("wake_lat_p50_ns", "wake_lat_p99_ns", "wake_lat_max_ns")]
        lat_us = [max(floor_us, v) for v in raw_us]
        xs = [floor_us, lat_us[0], lat_us[0], lat_us[1], lat_us[1], lat_us[2], lat_us[2]]
        ys = [0, 0, 0.50, 0.50, 0.99, 0.99, 1.0]
        label = f"{r['policy']} ({r['engine']})" + (f", {r['param']}={r['value']}"
                                                   if several else "")
        st = ENGINE_STYLE.get(r["engine"], {})
        ax.plot(xs, ys, color=colour(r["policy"]), linestyle=st.get("linestyle", "-"),
                label=f"{label}: p50 {raw_us[0]:.0f} µs, p99 {raw_us[1]:.0f}, "
                      f"max {raw_us[2]:.0f}")
        ax.plot(lat_us, [0.5, 0.99, 1.0], linestyle="none", marker=st.get("marker", "o"),
                color=colour(r["policy"]))
    ax.set_xscale("log")
    ax.set_xlabel("wake-up latency (µs, log scale)")
    ax.set_ylabel("fraction of wake-ups")
    r0 = rows[0]
    ax.set_title(f"Wake-up latency of the {r0['group']} domain among "
                 f"{r0['domains'] - 1} others on {r0['cpus']} CPUs")
    ax.set_ylim(0, 1.03)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, args.out, "Step approximation of the CDF through the only three points the "
         "results record per domain (p50, p99, max; the markers); the shape between them "
         "is not measured. Latencies below 1 µs (0 in schedsim, which has no switch cost) "
         "are drawn at 1 µs.")


if __name__ == "__main__":
    main()
