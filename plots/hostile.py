#!/usr/bin/env python3
"""Isolation on the hypervisor: two bystanders (a cpu-bound `victim` and a `lat` latency
domain) next to N hostile neighbours of one kind, one panel column per kind.

    plots/plot hostile SWEEP.csv... --out FIG.png

Input: the CSV of `scripts/sweep isolation-hv` (kinds: fuzz = hypercall fuzzers that run
for the whole interval, yield-attack = neighbours that yield just before each accounting
tick, hostile = tenants that execute a privileged instruction and are killed at once).

Top: the victim's CPU time over its max-min fair share of the CPU time the domains got
(switching and idle time are nobody's), where every other domain's demand is what it used
(a neighbour that used less than the water level wanted no more; one that used more took
it from someone). docs/DESIGN.md's target: at least 0.99. Bottom: the latency domain's p99
wake-up latency over its own at N = 0 (docs/DESIGN.md: at most 1.2), and dotted, the same
beside N benign cpu hogs (kind `hog`): under a proportional policy a latency domain waits
behind busy neighbours whatever they are, so the gap between the two curves is what the
hostility itself costs.
"""

import argparse
from collections import defaultdict

from common import ENGINE_STYLE, colour, plt, save


def fair_share(demands, capacity):
    """Max-min fair allocation of `capacity` to `demands` (water-filling)."""
    left, out = capacity, [0.0] * len(demands)
    todo = sorted(range(len(demands)), key=lambda i: demands[i])
    while todo:
        level = left / len(todo)
        i = todo[0]
        if demands[i] <= level:
            out[i] = demands[i]
            left -= demands[i]
            todo.pop(0)
        else:
            for j in todo:
                out[j] = level
            break
    return out


def victim_ratio(run):
    """The victim's cpu_ns over its max-min fair share, in one run's group rows."""
    duration = run["victim"]["duration_ns"]
    demands, victim = [], None
    for group, r in run.items():
        count = max(int(r["count"]), 1)
        for _ in range(count):
            if group == "victim":
                victim = len(demands)
                demands.append(float(duration))  # cpu-bound: wants a whole CPU
            else:
                demands.append(float(r["cpu_ns"]) / count)
    capacity = sum(float(r["cpu_ns"]) for r in run.values())
    fair = fair_share(demands, capacity)[victim]
    return float(run["victim"]["cpu_ns"]) / fair if fair > 0 else float("nan")


def main():
    from common import read_csv

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = defaultdict(dict)  # (engine, policy, kind, n) -> group -> row
    for path in args.csv:
        for r in read_csv(path):
            runs[(r["engine"], r["policy"], r["variant"], r["value"])][r["group"]] = r
    kinds = sorted({k[2] for k in runs} - {"hog"})
    if not kinds:
        raise SystemExit("no runs of a hostile kind")
    hogs = defaultdict(dict)  # (engine, policy) -> n -> lat p99 over alone
    for (engine, policy, k, n), run in runs.items():
        alone = runs.get((engine, policy, k, 0), {}).get("lat")
        if k == "hog" and "lat" in run and alone and alone["wake_lat_p99_ns"]:
            hogs[(engine, policy)][n] = run["lat"]["wake_lat_p99_ns"] / alone["wake_lat_p99_ns"]
    fig, axes = plt.subplots(2, len(kinds), figsize=(3.4 * len(kinds), 6.2), sharex=True,
                             squeeze=False)
    for col, kind in enumerate(kinds):
        series = defaultdict(dict)
        for (engine, policy, k, n), run in runs.items():
            if k == kind and "victim" in run and "lat" in run:
                series[(engine, policy)][n] = run
        top, bottom = axes[0][col], axes[1][col]
        for (engine, policy), pts in sorted(series.items()):
            ns = sorted(pts)
            style = dict(color=colour(policy), label=f"{policy} ({engine})",
                         **ENGINE_STYLE.get(engine, {}))
            top.plot(ns, [victim_ratio(pts[n]) for n in ns], **style)
            base = pts[ns[0]]["lat"]["wake_lat_p99_ns"] if ns and ns[0] == 0 else None
            if base:
                bottom.plot(ns, [pts[n]["lat"]["wake_lat_p99_ns"] / base for n in ns], **style)
            ref = hogs.get((engine, policy), {})
            if ref:
                xs = sorted(ref)
                bottom.plot(xs, [ref[x] for x in xs], color=colour(policy), linestyle=":",
                            linewidth=1, label=f"{policy}: as many benign hogs")
        top.axhline(0.99, color="black", linewidth=1, linestyle=":", label="target 0.99")
        bottom.axhline(1.2, color="black", linewidth=1, linestyle=":", label="target 1.2")
        top.set_title(f"neighbours: {kind}", fontsize=10)
        bottom.set_xlabel("hostile neighbours")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("victim CPU / max-min fair share")
    axes[1][0].set_ylabel("latency domain p99 / alone")
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Bystanders next to N hostile neighbours on 2 CPUs (scripts/sweep "
         "isolation-hv). Top: the cpu-bound victim's CPU time over its max-min fair share "
         "(others' demand = what they used). Bottom: the latency domain's p99 wake-up "
         "latency over its own with no neighbours; dotted, beside as many benign cpu hogs.")


if __name__ == "__main__":
    main()
