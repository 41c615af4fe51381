"""Recycling: replace workers past ``--max-requests``, ``--max-age`` or a memory limit.

Every second the serving workers are checked against ``generations.recycle_reason`` (pure);
memory is read (psutil, whole process tree) every ``MEMORY_CHECK_INTERVAL``. A worker past a
soft limit is replaced through a new worker and drains (``Supervisor.recycle``); past
``--max-memory-hard`` it is killed at once. Requests are counted by the proxy, so
``--max-requests`` needs it (``config.validate`` refuses it with ``--no-proxy``).

One recycle at a time: recycling every worker at once would be a reload nobody asked for.
A replacement that cannot start (the code on disk is broken) leaves the old worker serving;
that worker is not tried again for ``RETRY_AFTER`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from fleet.config.sections import RecyclingSettings
from fleet.supervisor.generations import RecycleLimits, RecycleReason, recycle_reason
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.manager import Supervisor, SupervisorError
from fleet.supervisor.usage import tree_rss

CHECK_INTERVAL = 1.0
MEMORY_CHECK_INTERVAL = 3.0
RETRY_AFTER = 60.0


def enabled(recycling: RecyclingSettings) -> bool:
    return bool(recycling.max_requests or recycling.max_age or recycling.max_memory or recycling.max_memory_hard)


def _detail(reason: RecycleReason, info: WorkerInfo, recycling: RecyclingSettings, rss: int | None,
            requests: int | None) -> str:
    if reason in (RecycleReason.MAX_MEMORY, RecycleReason.MAX_MEMORY_HARD):
        limit = recycling.max_memory if reason is RecycleReason.MAX_MEMORY else recycling.max_memory_hard
        flag = "--max-memory" if reason is RecycleReason.MAX_MEMORY else "--max-memory-hard"
        return f"its processes use {(rss or 0) / 2**20:.0f} MiB, more than {flag} {(limit or 0) / 2**20:.0f} MiB"
    if reason is RecycleReason.MAX_REQUESTS:
        return f"{requests} requests, its --max-requests is {info.request_limit}"
    return f"ready for more than --max-age {recycling.max_age:g} s"


async def watch(supervisor: Supervisor, recycling: RecyclingSettings, requests_of: Callable[[str], int | None]) -> None:
    """Run until cancelled."""
    retry_at: dict[str, float] = {}
    memory_at = 0.0
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        now = time.monotonic()
        retry_at = {worker_id: at for worker_id, at in retry_at.items() if at > now}
        read_memory = bool(recycling.max_memory or recycling.max_memory_hard) and now >= memory_at
        if read_memory:
            memory_at = now + MEMORY_CHECK_INTERVAL
        for info in supervisor.workers():
            if not info.current or not info.ready or info.pid is None or retry_at.get(info.id, 0.0) > now:
                continue
            rss = tree_rss(info.pid) if read_memory else None
            requests = requests_of(info.id)
            limits = RecycleLimits(info.request_limit, recycling.max_age, recycling.max_memory,
                                   recycling.max_memory_hard)
            ready_for = now - info.ready_since if info.ready_since is not None else None
            reason = recycle_reason(limits, requests=requests, ready_for=ready_for, rss=rss)
            if reason is None:
                continue
            try:
                await supervisor.recycle(info.id, reason, _detail(reason, info, recycling, rss, requests))
            except SupervisorError as exc:
                supervisor.output.fleet(f"error: {exc}; trying again in {RETRY_AFTER:g} s")
                retry_at[info.id] = time.monotonic() + RETRY_AFTER
            break  # one at a time; the snapshot is stale after a recycle
