"""How many CPU cores this process may use: what every thread and process count is sized from.

`os.cpu_count()` counts the machine's cores, not this process's: in a container limited to two CPUs
of a 64-core host (a Kubernetes CPU limit, `docker run --cpus 2`, `taskset`) it says 64, and a
pool sized from it runs 64 decoders or 64 ONNX threads on two cores, slower than two and with 32x
the memory. This reads what the process is actually given: its CPU affinity
(`os.sched_getaffinity`), capped by a CPU quota of its cgroup (v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up. `VIDSEARCH_CORES` overrides both (an
operator who knows better, or a test).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["usable_cores"]

CGROUP = Path("/sys/fs/cgroup")


def _quota(root: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in cores (None: no quota, or no cgroup file to read)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1: -1 = no quota
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may use (>= 1): `VIDSEARCH_CORES`, else its affinity capped by its cgroup quota."""
    forced = os.environ.get("VIDSEARCH_CORES", "").strip()
    if forced:
        try:
            return max(1, int(forced))
        except ValueError:
            raise ValueError(f"VIDSEARCH_CORES={forced!r}: expected a whole number of cores") from None
    return _detected()


@lru_cache(maxsize=1)
def _detected() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)
