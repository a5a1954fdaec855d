"""What the node a server runs on offers: the CPUs this process may use.

ONNX Runtime's default thread count is the machine's physical cores, which in a container with a
CPU limit (Kubernetes ``resources.limits.cpu``) is the host's, not the container's: threads then
outnumber the CPUs the server gets and throughput halves (a 2-core node served the demo's int8 at
about half the windows/s with 4 threads as with 2). The local server sizes ONNX Runtime's one
shared thread pool with :func:`usable_cpus`; the deploy manifests pass the same number from the
container's limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: cgroup v2 and v1 files that hold a CPU quota.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(*, v2: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                     v1_period: Path = CGROUP_V1_PERIOD) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = int(v1_quota.read_text()), int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's quota (rounded up), at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
