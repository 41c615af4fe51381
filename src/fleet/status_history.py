"""The numbers behind the status page (``/_fleet/``): rates from counters, a bounded history
of fleet-wide totals for the charts, the recent exits, and the JSON document the page polls.

Pure: values in, values out. The master's sampler (``fleet.status_page``) reads the clock,
psutil and the proxy's counters once per interval and feeds them here; a page view only reads
the document rendered at the last sample, so a hundred open tabs cost no psutil walk.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from fleet.hooks import exit_fields
from fleet.supervisor.info import WorkerChange, WorkerInfo
from fleet.supervisor.policy import WorkerState

# 10 minutes of 2-second samples: about 25 KB of JSON per poll at most.
HISTORY_POINTS = 300
RECENT_EXITS = 20


def rates(before: Mapping[Any, float], after: Mapping[Any, float], seconds: float) -> dict[Any, float]:
    """Per-second increase of each counter between two readings ``seconds`` apart.

    A key absent before counts from 0 (a worker that appeared since: all its counts fell in
    this interval); a counter that went down was reset (a new process): its new value counts,
    as Prometheus's ``rate()`` does. Keys gone after are dropped."""
    if seconds <= 0:
        return {}
    result: dict[Any, float] = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        increase = value - previous if value >= previous else value
        result[key] = increase / seconds
    return result


@dataclass(frozen=True)
class Usage:
    """CPU seconds and resident bytes of one worker's process tree."""

    cpu_seconds: float
    rss: int


@dataclass(frozen=True)
class Traffic:
    """What the proxy counts for one worker (None in every field with ``--no-proxy``)."""

    requests: int
    active_requests: int
    websockets: int


@dataclass(frozen=True)
class Point:
    """Fleet-wide totals at one sample: one x of every chart. None: not measured (no proxy)."""

    time: float
    requests_per_second: float | None
    connections: int | None
    websockets: int | None
    cpu_percent: float
    rss: int
    ready: int


class History:
    """The last ``size`` points, oldest first; memory is bounded whatever the uptime."""

    def __init__(self, size: int = HISTORY_POINTS) -> None:
        self.points: deque[Point] = deque(maxlen=size)

    def add(self, point: Point) -> None:
        self.points.append(point)

    def columns(self) -> dict[str, list[Any]]:
        """Column-wise, so the page's JSON does not repeat every key 300 times."""
        points = self.points
        return {
            "time": [round(p.time, 1) for p in points],
            "requests_per_second": [_round(p.requests_per_second) for p in points],
            "connections": [p.connections for p in points],
            "websockets": [p.websockets for p in points],
            "cpu_percent": [_round(p.cpu_percent) for p in points],
            "rss": [p.rss for p in points],
            "ready": [p.ready for p in points],
        }


@dataclass(frozen=True)
class Exit:
    time: float
    worker: str
    pid: int | None
    port: int
    code: int | None
    signal: str | None
    lived: float | None  # seconds the process ran, when known


class ExitLog:
    """The most recent worker exits the supervisor did not ask for (crashes, kills, a boot
    failure), newest last. A process that exits after SIGTERM from fleet (reload, scale-down,
    recycling, fleet's own stop) was ``stopping`` before: not listed."""

    def __init__(self, size: int = RECENT_EXITS) -> None:
        self.exits: deque[Exit] = deque(maxlen=size)

    def observe(self, change: WorkerChange, now: float) -> Exit | None:
        previous, info = change.before, change.after
        if info.state is not WorkerState.EXITED or (
                previous is not None and previous.state in (WorkerState.EXITED, WorkerState.STOPPING)):
            return None
        code, sig = exit_fields(info.last_exit)
        started = previous.started_at if previous is not None else None
        entry = Exit(now, info.id, previous.pid if previous is not None else None, info.port, code, sig,
                     now - started if started is not None else None)
        self.exits.append(entry)
        return entry


def worker_row(info: WorkerInfo, now: float, usage: Usage | None, cpu_percent: float | None,
               traffic: Traffic | None, requests_per_second: float | None) -> dict[str, Any]:
    """One row of the page's worker table."""
    return {
        "id": info.id, "generation": info.generation, "slot": info.label, "state": info.state.value,
        "current": info.current, "pid": info.pid, "port": info.port,
        "uptime": _round(now - info.started_at) if info.started_at is not None and info.pid is not None else None,
        "restarts": info.restarts, "crash_looping": info.crash_looping, "last_exit": info.last_exit,
        "connections": traffic.active_requests if traffic is not None else None,
        "websockets": traffic.websockets if traffic is not None else None,
        "requests": traffic.requests if traffic is not None else None,
        "requests_per_second": _round(requests_per_second),
        "cpu_percent": _round(cpu_percent),
        "rss": usage.rss if usage is not None else None,
    }


def totals(now: float, rows: Iterable[dict[str, Any]], proxy: bool) -> Point:
    """The chart point of one sample, summed over its worker rows."""
    rows = list(rows)
    return Point(
        time=now,
        requests_per_second=sum(r["requests_per_second"] or 0.0 for r in rows) if proxy else None,
        connections=sum(r["connections"] or 0 for r in rows) if proxy else None,
        websockets=sum(r["websockets"] or 0 for r in rows) if proxy else None,
        cpu_percent=sum(r["cpu_percent"] or 0.0 for r in rows),
        rss=sum(r["rss"] or 0 for r in rows),
        ready=sum(1 for r in rows if r["state"] == WorkerState.READY.value),
    )


def document(meta: Mapping[str, Any], rows: list[dict[str, Any]], history: History, exits: ExitLog,
             interval: float) -> bytes:
    """``/_fleet/status.json``: everything the page shows, rendered once per sample."""
    body = dict(meta)
    body["interval"] = interval
    body["workers"] = rows
    body["exits"] = [{"time": round(e.time, 1), "worker": e.worker, "pid": e.pid, "port": e.port,
                      "code": e.code, "signal": e.signal, "lived": _round(e.lived)}
                     for e in reversed(exits.exits)]  # newest first
    body["history"] = history.columns()
    return (json.dumps(body, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 1)


__all__ = ["Exit", "ExitLog", "HISTORY_POINTS", "History", "Point", "RECENT_EXITS", "Traffic", "Usage",
           "document", "rates", "totals", "worker_row"]
