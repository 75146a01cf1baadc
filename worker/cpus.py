"""How many torch threads one phase should use: the CPUs this worker may run on, shared with the
other workers on the machine. Pure computation plus reads of /sys and the affinity mask; no torch.

torch's default is one thread per core of the whole machine, whatever a container's CPU quota
or the other workers beside it: three workers on two cores then fight over them and train many
times slower than with one thread each.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for no limit)."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return int(fields[0]) / period if period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1's cpu.cfs_quota_us / cpu.cfs_period_us (quota -1: no limit)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup, v2 or v1; None without one (or when unreadable)."""
    try:
        if (root / "cpu.max").exists():
            return parse_cpu_max((root / "cpu.max").read_text())
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            return parse_cfs_quota(
                (v1 / "cpu.cfs_quota_us").read_text(), (v1 / "cpu.cfs_period_us").read_text()
            )
    except (OSError, ValueError):
        return None
    return None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (taskset, cpuset), or all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(
    *, override: int, affinity: int, quota: float | None, workers: int
) -> ThreadChoice:
    """override > 0 wins; otherwise the usable CPUs (affinity, capped by a cgroup quota rounded
    down) divided among the workers sharing them, at least one."""
    if override > 0:
        return ThreadChoice(override, "set by RELAYTUNE_WORKER_THREADS")
    usable = affinity
    source = f"{affinity} CPUs in the affinity mask"
    if quota is not None and math.floor(quota) < affinity:
        usable = max(1, math.floor(quota))
        source += f", cgroup quota {quota:g} CPUs"
    threads = max(1, usable // max(1, workers))
    if workers > 1:
        source += f", shared by {workers} workers"
    return ThreadChoice(threads, source)


def threads_for_this_worker(override: int, workers: int) -> ThreadChoice:
    return choose_threads(
        override=override, affinity=affinity_cpus(), quota=cgroup_cpu_quota(), workers=workers
    )
