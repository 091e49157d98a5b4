#!/usr/bin/env python3
"""Simulator against hypervisor: the same spec's per-domain CPU shares from schedsim and
from Domino, side by side, one panel per policy.

    plots/plot simvshyp (SWEEP.csv | SCHEDSIM.jsonl DOMINO.jsonl)... --out FIG.png

Input: the CSV of a sweep run with `--engine both` (its `results` column names each run's
JSON lines), or pairs of results files. Runs are paired by policy and spec name. Each bar is
a domain's cpu_ns / (cpus × duration); the panel title gives the largest difference in
percentage points (issue 6 asks for agreement within 5 points under credit and bvt).
"""

import argparse
from pathlib import Path

import numpy as np

from common import colour, plt, read_csv, read_jsonl, results_path, save


def load(inputs):
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
        runs[(run["policy"], run["name"], run["engine"])] = (run, doms)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = load(args.inputs)
    pairs = sorted({(p, n) for (p, n, e) in runs
                    if (p, n, "schedsim") in runs and (p, n, "domino") in runs})
    if not pairs:
        raise SystemExit("no spec was run on both engines (schedsim and domino)")
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4), squeeze=False,
                             sharey=True)
    for ax, (policy, name) in zip(axes[0], pairs):
        shares = {}
        for engine in ("schedsim", "domino"):
            run, doms = runs[(policy, name, engine)]
            shares[engine] = {d["name"]: d["cpu_ns"] / (run["cpus"] * run["duration_ns"])
                              for d in doms}
        names = [n for n in shares["schedsim"] if n in shares["domino"]]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [shares["schedsim"][n] for n in names], 0.4, color=colour(policy),
               label="schedsim")
        ax.bar(x + 0.2, [shares["domino"][n] for n in names], 0.4, color=colour(policy),
               alpha=0.45, hatch="//", edgecolor="0.3", label="domino (TCG)")
        diff = max(abs(shares["schedsim"][n] - shares["domino"][n]) for n in names)
        ax.set_xticks(x, names, rotation=45 if len(names) > 10 else 0, fontsize=8)
        ax.set_title(f"{name}\n{policy}: largest difference {100 * diff:.1f} points",
                     fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("share of the machine")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, args.out, "Solid: schedsim (switches and IPIs cost nothing); hatched: the "
         "hypervisor under QEMU TCG. Same spec file for both.")


if __name__ == "__main__":
    main()
