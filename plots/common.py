"""What the plot scripts share: reading sweep CSVs and results JSON lines, the figure style,
and saving a PNG with its caption. Matplotlib runs headless (Agg)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

import registry

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

ROOT = Path(__file__).resolve().parent.parent

# One colour per policy, the same in every figure, by the policy's place in the registry
# (plots/registry.py): rr blue, credit orange, bvt green, fifo purple, then the next
# registered policies in turn. Gray is for a name the registry does not know. Engines
# differ by line style / marker.
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown",
           "tab:pink", "tab:olive", "tab:cyan"]
ENGINE_STYLE = {"schedsim": dict(linestyle="-", marker="o"),
                "domino": dict(linestyle="--", marker="s"),
                # Linux's own scheduler (cfs or eevdf: grey, not a registry colour).
                "linux": dict(linestyle=":", marker="^")}


def colour(policy: str) -> str:
    names = registry.names()
    if policy not in names:
        return "tab:gray"
    return PALETTE[names.index(policy) % len(PALETTE)]


def read_csv(path: str | Path, keep_failed: bool = False) -> list[dict]:
    """Rows of a sweep CSV (plots/sweep.py), numbers converted where they parse. The rows of
    a run that failed (`status` not 0: the run's exit code, say a time-out or a check of
    the runner) are left out, each named on stderr, unless `keep_failed` (a figure that
    marks them: `simvshyp.py`): its figures may be a run cut short, not a result."""
    rows, failed = [], []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {k: number(v) for k, v in r.items()}
            if keep_failed or row.get("status", 0) in (0, ""):
                rows.append(row)
            else:
                failed.append(row)
    runs = sorted({(r["engine"], r["policy"], r.get("variant", ""), r.get("value", ""),
                    r["status"]) for r in failed}, key=str)
    for engine, policy, variant, value, status in runs:
        print(f"{path}: left out {engine} {policy} {variant} {value}: the run failed "
              f"(status {status})", file=sys.stderr)
    if not rows:
        sys.exit(f"{path}: no rows" + (" of a run that did not fail" if failed else ""))
    return rows


def number(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except (TypeError, ValueError):
            pass
    return v


def on_target(h: int, s: int) -> bool:
    """Issue 15's latency target for `s` (simulated, or another run) against the
    hypervisor's `h`, in ns: within 30%, or the same log2 bucket ([2^(k-1), 2^k) ns)."""
    return abs(s - h) <= 0.3 * h or max(h, 1).bit_length() == max(s, 1).bit_length()


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a results file (docs/DESIGN.md "Results"); lines that are not JSON skipped."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def results_path(row: dict, csv_path: str | Path) -> Path:
    """The JSON-lines file a CSV row came from (relative to the repository or absolute);
    failing that, the file of the same name beside the CSV (checked-in copies)."""
    p = Path(str(row["results"]))
    for cand in (p if p.is_absolute() else ROOT / p,
                 Path(csv_path).parent / row["engine"] / p.name, Path(csv_path).parent / p.name):
        if cand.exists():
            return cand
    sys.exit(f"{csv_path}: results file {p} of {row['engine']} {row['policy']} not found")


def save(fig, out: str | Path, caption: str | None = None) -> None:
    """Writes the PNG (creating its folder), with `caption` in small type under the axes."""
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=7, color="0.3", ha="left", va="bottom",
                 wrap=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(out)
