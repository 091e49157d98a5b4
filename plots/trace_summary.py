"""A text summary of a scheduling trace, in the spirit of `xenalyze --summary` and
`perf sched latency`: per domain, time running, runnable and blocked, wake-up latency
percentiles, switches and migrations.

Reads the Chrome/Perfetto trace JSON that both engines write (`scripts/run --trace`,
`schedsim --trace`): "X" events are run intervals (pid = CPU, tid = domain*1000 + vCPU),
"i" events named "wake" are wake-ups. Between two runs of a vCPU, the time before a wake-up
counts as blocked and the time after it (or the whole gap, without one) as runnable.
With --results, only the measured interval of that results file counts (its run record's
start_ns, or warmup_ns for schedsim, and duration_ns).

    python3 plots/trace_summary.py TRACE.json [--results RESULTS.jsonl]
"""

import argparse
import json
import sys
from collections import defaultdict


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def load_events(path):
    with open(path) as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def window(results):
    """The measured interval (µs) of a results file, or the whole trace."""
    if not results:
        return None
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            if r["kind"] == "run":
                # abi::tool::results: the hypervisor's run record has start_ns (system time, the
                # trace's clock), schedsim's has warmup_ns (its trace starts at 0).
                start = r["start_ns"] if r["engine"] == "domino" else r["warmup_ns"]
                return start / 1e3, (start + r["duration_ns"]) / 1e3
    return None


def summarize(events, win=None):
    """Per-thread figures (µs); threads are (domain, vCPU) ids, tid = domain*1000 + vCPU."""
    names = {}
    runs = defaultdict(list)  # tid -> [(start, end, cpu)]
    wakes = defaultdict(list)  # tid -> [ts]
    for e in events:
        ph, tid = e.get("ph"), e.get("tid")
        if ph == "M" and e.get("name") == "thread_name":
            names[tid] = e["args"]["name"]
        elif ph == "X":
            start = float(e["ts"])
            runs[tid].append((start, start + float(e["dur"]), e["pid"]))
        elif ph == "i" and e.get("name") == "wake":
            wakes[tid].append(float(e["ts"]))
    lo, hi = win if win else (float("-inf"), float("inf"))

    def clip(a, b):
        return max(0.0, min(b, hi) - max(a, lo))

    out = {}
    for tid in sorted(set(runs) | set(wakes)):
        rs = sorted(runs[tid])
        ws = sorted(wakes[tid])
        running = sum(clip(a, b) for a, b, _ in rs)
        runnable = blocked = 0.0
        latencies = []
        switches = sum(1 for a, _, _ in rs if lo <= a < hi)
        migrations = sum(1 for (_, _, c1), (a, _, c2) in zip(rs, rs[1:]) if c1 != c2 and lo <= a < hi)
        for (_, end, _), (start, _, _) in zip(rs, rs[1:]):
            woke = [w for w in ws if end <= w <= start]
            if woke:
                blocked += clip(end, woke[0])
                runnable += clip(woke[0], start)
                if lo <= woke[0] < hi:
                    latencies.append(start - woke[0])
            else:
                runnable += clip(end, start)
        out[tid] = {
            "name": names.get(tid, str(tid)),
            "running_us": running,
            "runnable_us": runnable,
            "blocked_us": blocked,
            "wakeups": len(latencies),
            "lat_p50_us": percentile(latencies, 50),
            "lat_p99_us": percentile(latencies, 99),
            "lat_max_us": max(latencies, default=0.0),
            "switches": switches,
            "migrations": migrations,
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--results", help="results file whose measured interval to use")
    args = ap.parse_args()
    rows = summarize(load_events(args.trace), window(args.results))
    if not rows:
        print("trace_summary: no run intervals in the trace", file=sys.stderr)
        return 1
    header = f"{'vCPU':<14}{'running ms':>12}{'runnable ms':>13}{'blocked ms':>12}{'wakeups':>9}{'lat p50 µs':>12}{'p99 µs':>10}{'max µs':>10}{'switches':>10}{'migr':>6}"
    print(header)
    for r in rows.values():
        print(
            f"{r['name']:<14}{r['running_us'] / 1e3:>12.2f}{r['runnable_us'] / 1e3:>13.2f}{r['blocked_us'] / 1e3:>12.2f}"
            f"{r['wakeups']:>9}{r['lat_p50_us']:>12.1f}{r['lat_p99_us']:>10.1f}{r['lat_max_us']:>10.1f}"
            f"{r['switches']:>10}{r['migrations']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
