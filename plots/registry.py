"""The scheduling policies, as the registry (`sched::registry`) lists them: what the sweeps
and the plots iterate, so that a policy added there is swept and coloured with no change
here. Read from `schedsim --list-policies` (one JSON object per policy, registry order),
building schedsim first if it is missing. Standard library only.

    import registry
    registry.names()                       # ["rr", "credit", "bvt", "fifo", ...]
    registry.names(preempts=True)          # those that can run cpu hogs on every CPU
    registry.names(domain_param="weight")  # proportional share
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def schedsim_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "schedsim"


@functools.cache
def policies() -> list[dict]:
    """Every policy: `name`, `summary`, `preempts`, `domain_params` and `global_params`
    (each a list of `name`, `default`, `min`, `max`, `doc`, `choices`: the names of a
    parameter whose values are names, value i meaning choices[i], else empty), in registry
    order."""
    binary = schedsim_binary()
    if not binary.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        str(ROOT / "Cargo.toml"), "-p", "sched", "--bin", "schedsim"],
                       check=True)
    try:
        out = subprocess.run([str(binary), "--list-policies"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"cannot read the policy registry from {binary} --list-policies: {e}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def names(preempts: bool | None = None, domain_param: str | None = None) -> list[str]:
    """The names of the policies that preempt (or not), and that have `domain_param`."""
    return [p["name"] for p in policies()
            if (preempts is None or p["preempts"] == preempts)
            and (domain_param is None
                 or any(q["name"] == domain_param for q in p["domain_params"]))]
