"""How many CPUs this process may use: its CPU affinity, capped by the container's CPU quota.

``os.cpu_count()`` counts the host's CPUs. Cloud Run (like ``docker --cpus``) limits a container
with a cgroup CPU quota instead, so a 4-vCPU instance on a 64-core host would size a thread
pool for 64 and spend its quota switching between them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def cpu_quota(v2: Path = _CGROUP_V2, v1_quota: Path = _CGROUP_V1_QUOTA,
              v1_period: Path = _CGROUP_V1_PERIOD) -> float | None:
    """CPUs' worth of time the cgroup may use (quota / period), or None when unlimited or unknown."""
    words = _read_words(v2)  # "max 100000" or "200000 100000"
    if len(words) != 2:
        words = _read_words(v1_quota) + _read_words(v1_period)  # "-1" when unlimited
    try:
        quota, period = (int(word) for word in words)
    except ValueError:  # "max", or files missing
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(**cgroup_paths) -> int:
    """CPUs this process can use: the affinity set, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(**cgroup_paths)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cpus_per_worker(environ=os.environ) -> int:
    """This process's share of ``available_cpus()`` when gunicorn runs several workers on the instance
    (core/capacity.py): the threads its model should use, so the replicas do not fight over cores."""
    from core.model.admission import worker_processes  # the worker count the master hands its workers

    return max(1, available_cpus() // worker_processes(None, environ))
