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


def trees_usage(pids: list[int]) -> dict[int, tuple[float, int]]:
    """CPU seconds and resident bytes of each pid's process tree, with one walk of the process
    table for all of them (``Process.children`` walks it once per call). CPU includes reaped
    children's time, as ``fleet.metrics.tree_usage`` does. Gone pids are left out."""
    if not pids:
        return {}
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        if ppid:
            children.setdefault(ppid, []).append(pid)
    result: dict[int, tuple[float, int]] = {}
    for root in pids:
        cpu = 0.0
        rss = 0
        seen = False
        stack = [root]
        visited: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in visited:  # the table is read while it changes: never loop on a reused pid
                continue
            visited.add(pid)
            stack.extend(children.get(pid, ()))
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    cpu += times.user + times.system
                    if pid == root:
                        cpu += times.children_user + times.children_system
                    rss += process.memory_info().rss
            except psutil.Error:
                continue  # exited while we looked
            seen = seen or pid == root
        if seen:
            result[root] = (cpu, rss)
    return result


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process. psutil's own map (what ``Process.children`` reads,
    3 ms for 180 processes here) where it has one; ``process_iter`` builds a Process object per
    process and takes five times as long."""
    ppid_map = getattr(psutil, "_ppid_map", None)
    if ppid_map is not None:
        try:
            return dict(ppid_map())
        except (psutil.Error, OSError):
            pass  # fall back to the public API
    return {process.pid: process.info.get("ppid") or 0 for process in psutil.process_iter(["ppid"])}
