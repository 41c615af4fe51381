"""CPU and memory of a worker's whole process tree (psutil), for ``fleet status`` and ``--max-memory``.

A ``--cmd`` worker may be a shell whose child is the real server, so one pid says little:
everything below the worker's pid counts.
"""

from __future__ import annotations

import asyncio

import psutil


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(pid: int) -> int:
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue  # exited while we looked
    return total


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


async def tree_cpu_percent(pids: list[int], interval: float = 0.2) -> dict[int, float]:
    """CPU % (100 = one core) of each pid's tree, sampled over ``interval`` for all at once."""
    trees = {pid: tree(pid) for pid in pids}
    before = {pid: _cpu_seconds(processes) for pid, processes in trees.items()}
    await asyncio.sleep(interval)
    result: dict[int, float] = {}
    for pid, processes in trees.items():
        after = _cpu_seconds(processes)
        used = sum(after[p] - before[pid].get(p, after[p]) for p in after)
        result[pid] = max(0.0, used / interval * 100.0)
    return result
