#!/usr/bin/env python3
"""Per-CPU timeline (Gantt) of a scheduling trace: one row per physical CPU, one coloured
bar per run interval, coloured by domain; wake-ups as ticks; the hypervisor's `late` marks
(an interrupt taken 256 µs or more late: the CPU's timer held, or an IPI taken late) as red
lines under the row, from when the interrupt was due to when it came.

    plots/plot gantt TRACE.json --out FIG.png [--start-ms T] [--ms 300]

Input: Chrome/Perfetto trace-event JSON as docs/DESIGN.md fixes it (`schedsim --trace`, and
`scripts/run --trace` once the hypervisor records traces): pid = physical CPU, tid = domain
× 1000 + vCPU, "X" events (ts, dur in µs) for run intervals, "i" instants for wake-ups,
"M" metadata naming CPUs (process_name) and vCPUs (thread_name). Either the object form
({"traceEvents": [...]}) or a bare array.
"""

import argparse
import json

from common import plt, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--out", required=True)
    ap.add_argument("--start-ms", type=float, default=None,
                    help="start of the window (default: the first run interval)")
    ap.add_argument("--ms", type=float, default=300, help="length of the window")
    args = ap.parse_args()
    with open(args.trace) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    runs = [e for e in events if e.get("ph") == "X"]
    if not runs:
        raise SystemExit(f"{args.trace}: no run intervals (\"X\" events)")
    cpu_names = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    start_us = (args.start_ms * 1000 if args.start_ms is not None
                else min(float(e["ts"]) for e in runs))
    end_us = start_us + args.ms * 1000

    cpus = sorted({e["pid"] for e in runs})
    domains = sorted({int(e["tid"]) // 1000 for e in runs})
    cmap = plt.get_cmap("tab20" if len(domains) > 10 else "tab10")
    dcol = {d: cmap(i % cmap.N) for i, d in enumerate(domains)}
    label_of = {}
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(cpus) + 1.8))
    for e in runs:
        ts, dur = float(e["ts"]), float(e.get("dur", 0))
        if ts + dur < start_us or ts > end_us:
            continue
        d = int(e["tid"]) // 1000
        label_of.setdefault(d, e.get("name", str(d)).split(".")[0])
        a, b = max(ts, start_us), min(ts + dur, end_us)
        ax.broken_barh([((a - start_us) / 1000, (b - a) / 1000)], (cpus.index(e["pid"]) - 0.4, 0.8),
                       facecolors=dcol[d], edgecolor="white", linewidth=0.3)
    for e in events:
        if e.get("ph") == "i" and e.get("cat") == "host" and e.get("pid") in cpus:
            a = float(e["ts"])
            b = a + float(e.get("args", {}).get("late_us", 0))
            if b >= start_us and a <= end_us:
                a, b = max(a, start_us), min(b, end_us)
                row = cpus.index(e["pid"]) + 0.45
                ax.plot([(a - start_us) / 1000, (b - start_us) / 1000], [row, row], color="red",
                        linewidth=2.5 if e.get("args", {}).get("of") == "kick" else 1.2)
            continue
        if (e.get("ph") == "i" and e.get("cat") != "interval" and start_us <= float(e["ts"]) <= end_us
                and e.get("pid") in cpus):
            ax.plot((float(e["ts"]) - start_us) / 1000, cpus.index(e["pid"]) + 0.45,
                    marker="|", color="black", markersize=5)
    ax.set_yticks(range(len(cpus)), [cpu_names.get(c, f"cpu{c}") for c in cpus])
    ax.set_xlim(0, args.ms)
    ax.set_ylim(-0.6, len(cpus) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(f"ms from {start_us / 1000:.1f} ms")
    ax.set_title(f"Per-CPU timeline: {args.trace.rsplit('/', 1)[-1]}")
    shown = [d for d in domains if d in label_of]
    if len(shown) <= 24:
        handles = [plt.Rectangle((0, 0), 1, 1, color=dcol[d]) for d in shown]
        ax.legend(handles, [label_of[d] for d in shown], fontsize=7, ncol=min(len(shown), 12),
                  loc="upper center", bbox_to_anchor=(0.5, -0.22 if len(cpus) > 2 else -0.35))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, args.out, "Bars: a vCPU running on that CPU; ticks: wake-ups; red lines: an "
         "interrupt taken late, from due to taken (thick: an IPI, the CPU stalled). "
         "From the trace's \"X\" and \"i\" events (docs/DESIGN.md traces).")


if __name__ == "__main__":
    main()
