"""How many CPUs fleet may really use: the default of ``-n``.

``os.cpu_count()`` is the node's core count; inside a container (Kubernetes ``limits.cpu``,
``docker run --cpus``) or a systemd unit with ``CPUQuota=`` the cgroup v2 ``cpu.max`` quota is
what the kernel grants, and a worker per node core would only queue for it. The default is
the smallest of: the CPUs this process may run on (affinity), and ``ceil(quota / period)`` of
its cgroup and every parent up to the root of the cgroup namespace.
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def parse_cpu_max(text: str) -> float | None:
    """CPUs granted by a ``cpu.max`` line (``"200000 100000"`` -> 2.0; ``"max 100000"`` -> None)."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_dirs(proc_self_cgroup: str, root: str = CGROUP_ROOT) -> list[str]:
    """This process's cgroup v2 directory and its parents, from ``/proc/self/cgroup``'s text."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            relative = line[3:].strip().strip("/")
            parts = relative.split("/") if relative else []
            return [os.path.join(root, *parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [root]


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def cgroup_cpu_limit(root: str = CGROUP_ROOT) -> float | None:
    """The tightest ``cpu.max`` quota over this process's cgroup and its parents (None: no limit)."""
    limits = []
    for directory in cgroup_dirs(_read("/proc/self/cgroup") or "", root):
        text = _read(os.path.join(directory, "cpu.max"))
        limit = parse_cpu_max(text) if text is not None else None
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def available_cpus(cpu_count: int | None, affinity: int | None, limit: float | None) -> int:
    """Whole CPUs to plan workers for (pure: the three facts are arguments)."""
    count = affinity or cpu_count or 1
    if limit is not None:
        count = min(count, max(1, math.ceil(limit - 1e-9)))
    return max(1, count)


def default_workers() -> int:
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return available_cpus(os.cpu_count(), affinity, cgroup_cpu_limit())


# auto proxy processes: at most this many (16 cores of proxy outrun any one machine's workers).
MAX_AUTO_PROXY_PROCESSES = 16


def auto_proxy_processes(usable: int, command: str) -> int:
    """``--proxy-processes auto`` (pure). ``fleet balance``: one per usable core (the proxy is
    all the machine runs). ``fleet up``: one per 4 usable cores, at least 1, since the workers
    need the rest (a Tornado handler costs several times the proxy's ~100 us per request).
    Capped at ``MAX_AUTO_PROXY_PROCESSES``."""
    count = usable if command == "balance" else usable // 4
    return max(1, min(MAX_AUTO_PROXY_PROCESSES, count))


def proxy_processes(requested: int, command: str) -> int:
    """The proxy process count for ``--proxy-processes`` (0 = auto: by the usable CPUs)."""
    if requested > 0:
        return requested
    return auto_proxy_processes(default_workers(), command)


__all__ = ["auto_proxy_processes", "proxy_processes", "available_cpus", "cgroup_cpu_limit", "cgroup_dirs", "default_workers", "parse_cpu_max"]
