#!/usr/bin/env python3
"""Timeline figure: each domain's share of the CPU time handed out in each window, over the
measured interval, with the timeline's events marked; one panel per results file (schedsim
beside the hypervisor when given both).

    plots/plot timeline RESULTS.jsonl... --out FIG.png [--groups] [--title TEXT]

Input: results files of runs with `window_ms` (their `window` records; docs/DESIGN.md "Pools,
timelines and time series"). A domain's share in a window is its cpu_ns over every
domain's cpu_ns in that window, drawn at the window's end as a step over the window. With
more than 16 domains (or `--groups`) each group is drawn as its mean domain's share with
the band from its least to its most served domain. `event` records, when present (spec
`[[event]]`), are marked by a vertical line at their planned instant (dotted) and, if
applied, a solid one where they took effect, labelled with their target and what was done.
"""

import argparse
from pathlib import Path

from common import ENGINE_STYLE, PALETTE, plt, read_jsonl, save

MANY = 16


def windows_of(recs):
    """(ends in s, {domain id: [share per window]}, {id: domain record})."""
    ends, by_t = [], {}
    for r in recs:
        if r["kind"] == "window":
            if r["t_ns"] not in by_t:
                by_t[r["t_ns"]] = []
                ends.append(r["t_ns"])
            by_t[r["t_ns"]].append(r)
    domains = {d["id"]: d for d in recs if d["kind"] == "domain"}
    shares = {i: [] for i in domains}
    for t in ends:
        total = sum(w["cpu_ns"] for w in by_t[t]) or 1
        got = {w["id"]: w["cpu_ns"] / total for w in by_t[t]}
        for i in shares:
            shares[i].append(got.get(i, 0.0))
    return [t / 1e9 for t in ends], shares, domains


def steps(ends, ys):
    """A step per window: from the window's start to its end at its value."""
    xs, out, start = [], [], 0.0
    for end, y in zip(ends, ys):
        xs += [start, end]
        out += [y, y]
        start = end
    return xs, out


def panel(ax, path, by_group):
    recs = read_jsonl(path)
    run = next((r for r in recs if r["kind"] == "run"), None)
    if run is None:
        raise SystemExit(f"{path}: no run record")
    ends, shares, domains = windows_of(recs)
    if not ends:
        raise SystemExit(f"{path}: no window records (run the spec with window_ms)")
    style = ENGINE_STYLE.get(run["engine"], {})
    groups = {}
    for i, d in domains.items():
        groups.setdefault(d["group"], []).append(i)
    if by_group or len(domains) > MANY:
        for k, (g, ids) in enumerate(groups.items()):
            c = PALETTE[k % len(PALETTE)]
            per_window = list(zip(*(shares[i] for i in ids)))
            mean = [sum(w) / len(w) for w in per_window]
            xs, ys = steps(ends, mean)
            ax.plot(xs, ys, color=c, linestyle=style.get("linestyle", "-"),
                    label=f"{g}: {len(ids)} × {domains[ids[0]]['workload']} (mean)")
            _, lo = steps(ends, [min(w) for w in per_window])
            _, hi = steps(ends, [max(w) for w in per_window])
            ax.fill_between(xs, lo, hi, color=c, alpha=0.2, linewidth=0)
    else:
        for k, (i, d) in enumerate(sorted(domains.items())):
            xs, ys = steps(ends, shares[i])
            ax.plot(xs, ys, color=PALETTE[k % len(PALETTE)],
                    linestyle=style.get("linestyle", "-"),
                    label=f"{d['name']} (weight {d['weight']})")
    for e in (r for r in recs if r["kind"] == "event"):
        at = e["at_ns"] / 1e9
        ax.axvline(at, color="0.3", linestyle=":", linewidth=1)
        if e.get("applied_ns") is not None:
            ax.axvline(e["applied_ns"] / 1e9, color="0.3", linewidth=1)
        mark = "" if e["ok"] else " (failed)"
        ax.text(at, 0.98, f" {e['target']} {e['what']}{mark}", rotation=90, va="top",
                ha="right", fontsize=7, color="0.2", transform=ax.get_xaxis_transform())
    ax.set_xlim(0, ends[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time into the measured interval (s)")
    ax.set_ylabel("share of the CPU time in the window")
    ax.set_title(f"{run['name']}: {run['policy']} on {run['cpus']} CPUs ({run['engine']})",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="upper right", ncol=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--groups", action="store_true", help="one curve per group")
    args = ap.parse_args()
    n = len(args.results)
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.4), sharey=True, squeeze=False)
    for ax, path in zip(axes[0], args.results):
        panel(ax, Path(path), args.groups)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Each window's CPU time split among the domains (a step per window, "
         "from the window records); dotted lines: events as planned, solid: as applied.")


if __name__ == "__main__":
    main()
