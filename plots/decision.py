#!/usr/bin/env python3
"""Decision-cost figure: what one scheduling decision costs each policy on the host, from
`schedbench` (`scripts/bench sched`).

    plots/plot decision BENCH.jsonl --out FIG.png

Input: `bench` records named `sched.POLICY.wake_pick.Nvcpus` (one wake plus one pick, and
the `context_saved` report, with N runnable vCPUs on one runqueue), `sched.POLICY.steal.64cpus`
(an idle CPU scanning 63 peers and stealing from the last; for credit2, which never picks
from another runqueue, CPU 0 taking a vCPU placed on CPU 63 from one 64-CPU runqueue), and
`sched.credit2.balance[_even].Ncpus` (credit2's `balance_load` over runqueues of 16 CPUs,
moving a vCPU, or with loads already even). Other records are ignored.

Left: wake + pick against vCPUs per runqueue, one line per policy, with issue 12's target
(200 ns) and docs/DESIGN.md's (100 ns). Right: the steal at 64 CPUs per policy (target
500 ns) and credit2's balance at 64 and 255 CPUs (target 2 µs). Host nanoseconds, medians of
several rounds: the figure is only as quiet as the host was when it was measured.
"""

import argparse
import re
import sys
from collections import defaultdict

from common import colour, plt, read_jsonl, save

WAKE_PICK = re.compile(r"^sched\.([a-z0-9_]+)\.wake_pick\.(\d+)vcpus$")
STEAL = re.compile(r"^sched\.([a-z0-9_]+)\.steal\.(\d+)cpus$")
BALANCE = re.compile(r"^sched\.credit2\.(balance|balance_even)\.(\d+)cpus$")


def parse(records):
    """(wake_pick {policy: {vcpus: ns}}, steal {policy: ns}, balance {(kind, cpus): ns})."""
    wake_pick, steal, balance = defaultdict(dict), {}, {}
    for r in records:
        if r.get("kind") != "bench" or r.get("unit") != "ns":
            continue
        name, value = r["name"], float(r["value"])
        if m := WAKE_PICK.match(name):
            wake_pick[m[1]][int(m[2])] = value
        elif m := STEAL.match(name):
            steal[m[1]] = value
        elif m := BALANCE.match(name):
            balance[(m[1], int(m[2]))] = value
    return wake_pick, steal, balance


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    wake_pick, steal, balance = parse(read_jsonl(args.jsonl))
    if not wake_pick:
        sys.exit(f"{args.jsonl}: no sched.*.wake_pick.* bench records (scripts/bench sched)")

    fig, (ax_w, ax_s) = plt.subplots(1, 2, figsize=(11, 4.4),
                                     gridspec_kw=dict(width_ratios=[1.2, 1]))
    for policy, pts in sorted(wake_pick.items()):
        xs = sorted(pts)
        ax_w.plot(xs, [pts[x] for x in xs], marker="o", color=colour(policy), label=policy)
    for y, what in ((200, "issue 12: 200 ns"), (100, "DESIGN: 100 ns")):
        ax_w.axhline(y, color="0.5", linewidth=0.8, linestyle=":")
        ax_w.text(1, y, what, fontsize=7, color="0.35", va="bottom")
    ax_w.set_xscale("log", base=2)
    ax_w.set_xlabel("runnable vCPUs on the runqueue")
    ax_w.set_ylabel("ns per wake + pick (host)")
    ax_w.set_title("One scheduling decision")
    ax_w.set_ylim(0, max(250, max(v for p in wake_pick.values() for v in p.values()) * 1.15))
    ax_w.grid(True, alpha=0.3)
    ax_w.legend(fontsize=8, ncol=2)

    bars = [(f"{p}\nsteal 64", v, colour(p), 500) for p, v in sorted(steal.items())]
    bars += [(f"credit2\n{'balance' if k == 'balance' else 'even'} {c}", v, colour("credit2"),
              2000) for (k, c), v in sorted(balance.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    xs = range(len(bars))
    ax_s.bar(xs, [b[1] for b in bars], color=[b[2] for b in bars], alpha=0.85)
    for x, (_, v, _, target) in zip(xs, bars):
        ax_s.plot([x - 0.4, x + 0.4], [target, target], color="0.3", linewidth=1,
                  linestyle="--")
        ax_s.text(x, v, f"{v:.0f}", fontsize=6, ha="center", va="bottom")
    ax_s.set_xticks(list(xs), [b[0] for b in bars], fontsize=6, rotation=60)
    ax_s.set_yscale("log")
    ax_s.set_ylabel("ns (host, log scale)")
    ax_s.set_title("Steal at 64 CPUs, credit2 balance (dashes: targets)")
    ax_s.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, args.out, "schedbench medians on the host (scripts/bench sched); targets: "
         "wake+pick <= 200 ns (issue 12), <= 100 ns at 1024 vCPUs (docs/DESIGN.md); steal "
         "<= 500 ns; a credit2 balance <= 2 us.")


if __name__ == "__main__":
    main()
