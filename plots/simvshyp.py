#!/usr/bin/env python3
"""Simulator against hypervisor: the same spec's per-domain CPU shares from schedsim and
from Domino, side by side, one panel per policy; with `--calibrated`, also schedsim on a
cost profile, and a second row with the latency domains' p50 and p99 wake-up latency.

    plots/plot simvshyp (SWEEP.csv | SCHEDSIM.jsonl DOMINO.jsonl)... \
        [--calibrated CALIBRATED.jsonl...] --out FIG.png

Input: the CSV of a sweep run with `--engine both` (its `results` column names each run's
JSON lines), or pairs of results files. Runs are paired by policy and spec name. Each bar is
a domain's cpu_ns / (cpus × duration); the panel title gives the largest difference in
percentage points (issue 6 asks for agreement within 5 points under credit and bvt).
`--calibrated` takes results of `schedsim --profile FILE` (their engine is `schedsim` too,
hence a flag of their own), paired the same way. The latency row (shown when a paired run
has a domain that woke up) is log-scaled; issue 15's target is p50 and p99 within 30% (or
the same log2 bucket) of the hypervisor's.
"""

import argparse
from pathlib import Path

import numpy as np

from common import colour, plt, read_csv, read_jsonl, results_path, save


def load(inputs, engine=None):
    files = []
    for p in inputs:
        if p.endswith(".csv"):
            files += list(dict.fromkeys(results_path(r, p) for r in read_csv(p)))
        else:
            files.append(Path(p))
    runs = {}
    for f in files:
        recs = read_jsonl(f)
        run = next(r for r in recs if r["kind"] == "run")
        doms = [r for r in recs if r["kind"] == "domain"]
        runs[(run["policy"], run["name"], engine or run["engine"])] = (run, doms)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--calibrated", nargs="+", default=[],
                    help="results of schedsim --profile FILE, paired like the others")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = load(args.inputs)
    runs.update(load(args.calibrated, engine="calibrated"))
    pairs = sorted({(p, n) for (p, n, e) in runs
                    if (p, n, "schedsim") in runs and (p, n, "domino") in runs})
    if not pairs:
        raise SystemExit("no spec was run on both engines (schedsim and domino)")
    woke = any(d["wakeups"] > 0 for (p, n) in pairs for d in runs[(p, n, "domino")][1])
    rows = 2 if woke else 1
    fig, axes = plt.subplots(rows, len(pairs), figsize=(5.2 * len(pairs), 4 * rows),
                             squeeze=False)
    styles = {
        "schedsim": dict(label="schedsim (ideal)"),
        "calibrated": dict(alpha=0.75, hatch="..", edgecolor="0.2",
                           label="schedsim (cost profile)"),
        "domino": dict(alpha=0.45, hatch="//", edgecolor="0.3", label="domino (TCG)"),
    }
    for col, (policy, name) in enumerate(pairs):
        ax = axes[0][col]
        engines = [e for e in ("schedsim", "calibrated", "domino") if (policy, name, e) in runs]
        shares, doms_of = {}, {}
        for engine in engines:
            run, doms = runs[(policy, name, engine)]
            doms_of[engine] = {d["name"]: d for d in doms}
            shares[engine] = {d["name"]: d["cpu_ns"] / (run["cpus"] * run["duration_ns"])
                              for d in doms}
        names = [n for n in shares["schedsim"] if all(n in shares[e] for e in engines)]
        x = np.arange(len(names))
        w = 0.8 / len(engines)
        for i, engine in enumerate(engines):
            ax.bar(x - 0.4 + w * (i + 0.5), [shares[engine][n] for n in names], w,
                   color=colour(policy), **styles[engine])
        title = [f"{name}", f"{policy}: largest difference"]
        for engine in engines[:-1]:
            diff = max(abs(shares[engine][n] - shares["domino"][n]) for n in names)
            title.append(f"{'ideal' if engine == 'schedsim' else 'calibrated'} "
                         f"{100 * diff:.1f} points")
        ax.set_xticks(x, names, rotation=45 if len(names) > 10 else 0, fontsize=8)
        ax.set_title(title[0] + "\n" + title[1] + " " + ", ".join(title[2:]), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylabel("share of the machine")
        if rows == 2:
            ax = axes[1][col]
            lat = [n for n in names if doms_of["domino"][n]["wakeups"] > 0]
            labels = [f"{n} {q}" for n in lat for q in ("p50", "p99")]
            x = np.arange(len(labels))
            for i, engine in enumerate(engines):
                vals = [max(doms_of[engine][n][f"wake_lat_{q}_ns"], 1) / 1e3
                        for n in lat for q in ("p50", "p99")]
                ax.bar(x - 0.4 + w * (i + 0.5), vals, w, color=colour(policy),
                       **styles[engine])
            ax.set_yscale("log")
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel("wake-up latency (µs, log)")
            ax.set_title(f"{name}, {policy}: wake-up latency (0 drawn at 1 ns)", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Solid: schedsim on the ideal machine (switches and IPIs cost "
         "nothing); dotted: schedsim on a cost profile (scripts/calibrate); hatched: the "
         "hypervisor under QEMU TCG. Same spec file for all.")


if __name__ == "__main__":
    main()
