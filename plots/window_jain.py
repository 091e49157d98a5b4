#!/usr/bin/env python3
"""Fairness over time: Jain's index of CPU time / weight over the cpu domains in each
window, one curve per policy and engine, against docs/DESIGN.md's target (Jain >= 0.999
over 1 s windows at 128 domains).

    plots/plot window_jain (SWEEP.csv | RESULTS.jsonl)... --out FIG.png

Input: the CSV of `scripts/sweep windows` (its `results` column names each run's JSON
lines) or results files of runs with `window_ms`. Each run's per-window indexes are the
`summary` record's `window_jain` (computed from the window records when the summary has
none). Drawn as 1 − Jain on a log axis, so that 0.99, 0.999 and 0.9999 are apart; the
dotted line is the target, and lower is fairer. A window whose index is exactly 1 is drawn
at 1e-6.
"""

import argparse
from pathlib import Path

from common import ENGINE_STYLE, colour, plt, read_csv, read_jsonl, results_path, save

FLOOR = 1e-6


def jain(xs):
    s, s2 = sum(xs), sum(x * x for x in xs)
    return s * s / (len(xs) * s2) if s2 > 0 else 1.0


def per_window(recs):
    summary = next((r for r in recs if r["kind"] == "summary"), None) or {}
    if summary.get("window_jain"):
        # The engines' own (sched::windows::window_jain: per CPU pool, the worst).
        js = summary["window_jain"]
    elif any(r["kind"] == "event" and r.get("applied_ns") is not None and r["at_ns"] > 0
             for r in recs):
        # Timeline events changed who competed: no one Jain per window, as the engines
        # leave it out (sched::summary::of_run).
        js = []
    else:
        # Results written before the summary carried it: the same figure, pool by pool.
        weight = {d["id"]: (d.get("pool"), max(d["weight"], 1)) for d in recs
                  if d["kind"] == "domain" and d["workload"] == "cpu"}
        by_t = {}
        for w in (r for r in recs if r["kind"] == "window" and r["id"] in weight):
            pool, wt = weight[w["id"]]
            by_t.setdefault(w["t_ns"], {}).setdefault(pool, []).append(w["cpu_ns"] / wt)
        js = [min(jain(v) for v in pools.values()) for _, pools in sorted(by_t.items())]
    ends = sorted({r["t_ns"] for r in recs if r["kind"] == "window"})
    return [t / 1e9 for t in ends][:len(js)], js


def files(inputs):
    out = []
    for p in inputs:
        if p.endswith(".csv"):
            out += list(dict.fromkeys(results_path(r, p) for r in read_csv(p)))
        else:
            out.append(Path(p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    title = None
    drawn = 0
    for f in files(args.inputs):
        recs = read_jsonl(f)
        run = next((r for r in recs if r["kind"] == "run"), None)
        if run is None:
            continue
        ends, js = per_window(recs)
        if not js:
            continue
        st = ENGINE_STYLE.get(run["engine"], {})
        worst = min(js)
        ax.plot(ends, [max(FLOOR, 1 - j) for j in js], color=colour(run["policy"]),
                linestyle=st.get("linestyle", "-"), marker=st.get("marker", "o"),
                markersize=3, label=f"{run['policy']} ({run['engine']}): worst {worst:.4f}")
        drawn += 1
        title = title or f"Jain per window: {run['domains']} domains on {run['cpus']} CPUs"

    if not drawn:
        raise SystemExit("no run with window records in " + " ".join(args.inputs))
    ax.axhline(1e-3, color="0.2", linestyle=":", linewidth=1, label="target: Jain 0.999")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, 1)
    ax.set_xlabel("window end (s into the measured interval)")
    ax.set_ylabel("1 − Jain's index of CPU time / weight (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, args.out, "Per window, Jain's index over the cpu domains of CPU time / weight "
         "(sched::windows), drawn as 1 − Jain: lower is fairer; solid schedsim, dashed the "
         "hypervisor under TCG.")


if __name__ == "__main__":
    main()
