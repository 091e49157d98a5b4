#!/usr/bin/env python3
"""Checks a sweep CSV against what the matrix should have produced (plots/selftest):

    check_sweep.py CSV --rows N --policies P,P --values V,V --groups G,G

Every (policy, value, group) combination must appear exactly once, every row must come from
a run that exited 0 with every domain as expected, and the numbers must be sane (a share of
the machine in (0, 1], positive work, shares of a run summing to at most 1). Exit 1 with one
line per problem otherwise.
"""

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import COLUMNS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--policies", required=True)
    ap.add_argument("--values", required=True)
    ap.add_argument("--groups", required=True)
    a = ap.parse_args()
    problems = []
    with open(a.csv, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            problems.append(f"header {reader.fieldnames} != {COLUMNS}")
        rows = list(reader)
    if len(rows) != a.rows:
        problems.append(f"{len(rows)} rows, expected {a.rows}")
    seen = Counter((r["policy"], r["value"], r["group"]) for r in rows)
    for p in a.policies.split(","):
        for v in a.values.split(","):
            for g in a.groups.split(","):
                if seen[(p, v, g)] != 1:
                    problems.append(f"({p}, {v}, {g}) appears {seen[(p, v, g)]} times")
    per_run = defaultdict(float)
    for i, r in enumerate(rows, 2):
        where = f"line {i} ({r['policy']} {r['param']}={r['value']} {r['group']})"
        if r["status"] != "0" or r["exit"] != "ok":
            problems.append(f"{where}: status {r['status']}, exit {r['exit']!r}")
        try:
            share = float(r["cpu_share"])
            if not 0 < share <= 1:
                problems.append(f"{where}: cpu_share {share} outside (0, 1]")
            per_run[r["results"]] += share
            if int(r["work"]) <= 0:
                problems.append(f"{where}: work {r['work']}")
            if not 0 < float(r["jain"]) <= 1:
                problems.append(f"{where}: jain {r['jain']}")
            p50, p99, pmax = (int(r[f"wake_lat_{k}_ns"]) for k in ("p50", "p99", "max"))
            if not p50 <= p99 <= pmax:
                problems.append(f"{where}: latency percentiles out of order")
        except ValueError as e:
            problems.append(f"{where}: {e}")
        if not Path(r["results"]).exists() and not (Path(__file__).parent.parent / r["results"]).exists():
            problems.append(f"{where}: results file {r['results']} missing")
    for run, total in per_run.items():
        if total > 1.0001:
            problems.append(f"{run}: shares sum to {total:.4f} > 1")
    for p in problems:
        print(f"{a.csv}: {p}")
    print(f"{a.csv}: {len(rows)} rows, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
