"""How many CPU cores this process may use: what the thread and process counts are sized from.

`os.cpu_count()` counts the machine's cores, not this process's: in a container limited to two CPUs
of a 64-core host (a Kubernetes CPU limit, `docker run --cpus 2`, `taskset`) it says 64, and a
pool sized from it runs 64 decoders or 64 ONNX threads on two cores, slower than two and with 32x
the memory. This reads what the process is actually given: its CPU affinity
(`os.sched_getaffinity`), capped by the tightest CPU quota of its cgroup and the cgroups above it
(v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a container's own namespace, a systemd
unit's `CPUQuota=`, a batch scheduler's job), rounded up. `VIDSEARCH_CORES` overrides both (an
operator who knows better, or a test).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["usable_cores"]

CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _levels(root: Path, proc: Path) -> list[tuple[str, Path]]:
    """The cgroup directories whose CPU quota binds this process: its own (from /proc/self/cgroup)
    and every ancestor up to the mount, for the v2 hierarchy and the v1 `cpu` controller; the mount
    root alone where the process's path is not under it (another cgroup namespace)."""
    out: list[tuple[str, Path]] = [("v2", root), ("v1", root / "cpu")]
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        kind, base = ("v2", root) if controllers == "" else ("v1", root / "cpu") if "cpu" in controllers.split(",") else ("", root)
        if not kind or not path.startswith("/"):
            continue
        here = base / path.strip("/")
        while here != base and base in here.parents:
            out.append((kind, here))
            here = here.parent
    return out


def _level_quota(kind: str, folder: Path) -> float | None:
    """One cgroup's CPU quota in cores (None: none set, unreadable, or not numbers that make one)."""
    try:
        if kind == "v2":
            quota, period = (folder / "cpu.max").read_text().split()[:2]  # "max 100000" or "200000 100000"
            if quota == "max":
                return None
        else:
            quota, period = (folder / "cpu.cfs_quota_us").read_text(), (folder / "cpu.cfs_period_us").read_text()  # -1: none
        q, p = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def _quota(root: Path = CGROUP, proc: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota, in cores, of the cgroups this process is in (None: no quota)."""
    quotas = [q for kind, folder in _levels(root, proc) if (q := _level_quota(kind, folder)) is not None]
    return min(quotas) if quotas else None


def usable_cores() -> int:
    """Cores this process may use (>= 1): `VIDSEARCH_CORES`, else its affinity capped by its cgroup quota."""
    forced = os.environ.get("VIDSEARCH_CORES", "").strip()
    if forced:
        try:
            n = int(forced)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"VIDSEARCH_CORES={forced!r}: expected a whole number of cores, 1 or more")
        return n
    return _detected()


@lru_cache(maxsize=1)
def _detected() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)
