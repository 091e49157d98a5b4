#!/usr/bin/env python3
"""Latency figure: the CDF of the wake-up latency of the latency-sensitive domain among cpu
hogs, one curve per policy; schedsim and the hypervisor in panels side by side.

    plots/plot latency SWEEP.csv... --out FIG.png [--workload latency]

Input: the CSV of `scripts/sweep latency` (any engine); each row's `results` file gives the
group's domain records, whose `wake_lat_hist` (log2 buckets from 1 µs, both engines) is the
whole distribution: the curve is the fraction of wake-ups that waited less than each
bucket's bound, a point per bound (the first bound, 1.024 µs, gathers everything below
it). Results written before the histograms existed have only p50, p99 and max: those are
drawn as the old three-step approximation (dotted, with markers). When the matrix has
several hog counts, each gets its own curve.
"""

import argparse

from common import ENGINE_STYLE, colour, plt, read_csv, read_jsonl, results_path, save

ENGINES = ["schedsim", "domino", "linux"]


def histogram(row, csv_path):
    """The group's merged histogram [(upper_ns, count)], or None without one."""
    recs = read_jsonl(results_path(row, csv_path))
    merged = {}
    found = False
    for d in recs:
        if d.get("kind") == "domain" and d["group"] == row["group"] and "wake_lat_hist" in d:
            found = True
            for upper, n in d["wake_lat_hist"]:
                merged[upper] = merged.get(upper, 0) + n
    return sorted(merged.items()) if found else None


def cdf(hist):
    total = sum(n for _, n in hist)
    xs, ys, seen = [], [], 0
    for upper, n in hist:
        seen += n
        xs.append(upper / 1000)
        ys.append(seen / total)
    return xs, ys, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workload", default="latency", help="the group's workload")
    args = ap.parse_args()
    rows = [(r, p) for p in args.csv for r in read_csv(p) if r["workload"] == args.workload]
    if not rows:
        raise SystemExit(f"no {args.workload} group in {' '.join(args.csv)}")
    several = len({r["value"] for r, _ in rows}) > 1
    engines = [e for e in ENGINES if any(r["engine"] == e for r, _ in rows)]
    fig, axes = plt.subplots(1, len(engines), figsize=(6.0 * len(engines), 4.8), sharey=True,
                             squeeze=False)
    floor_us = 1.0  # log axis: a latency of 0 (three-point fallback) is drawn at 1 µs
    old = False
    for ax, engine in zip(axes[0], engines):
        for r, path in sorted((x for x in rows if x[0]["engine"] == engine),
                              key=lambda x: (x[0]["policy"], x[0]["value"])):
            label = r["policy"] + (f", {r['param']}={r['value']}" if several else "")
            st = ENGINE_STYLE.get(engine, {})
            hist = histogram(r, path)
            if hist:
                xs, ys, total = cdf(hist)
                ax.step([xs[0] / 2] + xs, [0] + ys, where="post", color=colour(r["policy"]),
                        linestyle=st.get("linestyle", "-"),
                        label=f"{label}: {total} wake-ups, p99 {r['wake_lat_p99_ns'] / 1000:.0f} µs")
                continue
            old = True
            raw = [r[k] / 1000 for k in ("wake_lat_p50_ns", "wake_lat_p99_ns", "wake_lat_max_ns")]
            lat = [max(floor_us, v) for v in raw]
            ax.plot([floor_us, lat[0], lat[0], lat[1], lat[1], lat[2], lat[2]],
                    [0, 0, 0.50, 0.50, 0.99, 0.99, 1.0], color=colour(r["policy"]),
                    linestyle=":", label=f"{label} (3 points only)")
            ax.plot(lat, [0.5, 0.99, 1.0], linestyle="none", marker=st.get("marker", "o"),
                    color=colour(r["policy"]))
        r0 = next(r for r, _ in rows if r["engine"] == engine)
        ax.set_xscale("log")
        ax.set_xlabel("wake-up latency (µs, log scale)")
        ax.set_title(f"{engine}: the {r0['group']} domain among {r0['domains'] - 1} others "
                     f"on {r0['cpus']} CPUs", fontsize=9)
        ax.set_ylim(0, 1.03)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("fraction of wake-ups below the latency")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    note = (" Dotted: results without histograms, a step through p50, p99 and max only."
            if old else "")
    save(fig, args.out, "CDF of each run's wake-up latencies from its wake_lat_hist (log2 "
         "buckets from 1 µs: a point at each bucket's upper bound)." + note)


if __name__ == "__main__":
    main()
