"""Counters of several proxy processes, added up: what ``/metrics`` and ``fleet status`` show.

Each proxy process sends the master a snapshot of its ``ProxyStats`` counters (a JSON-able
dict, ``snapshot``) every ``balancer.group.STATS_INTERVAL``. The master keeps the latest
snapshot of each live process plus a ``base``: the last snapshot of every process that died,
added in (``add``). Totals are ``base + live snapshots`` (``fill``), so a counter never goes
back when a proxy process is restarted: Prometheus sees a monotonic counter, not a reset.
Requests a process answered after its last snapshot and before a ``kill -9`` are the only
ones not counted (at most ``STATS_INTERVAL`` of its traffic).

Gauges (in-flight requests, WebSockets) are not in snapshots: they come from the shared load
table (``balancer.loadtable``), which the master zeroes for a dead process.
"""

from __future__ import annotations

from typing import Any

from fleet.balancer.stats import DURATION_BUCKETS, ProxyStats, UpstreamStats

Snapshot = dict[str, Any]
_BUCKETS = len(DURATION_BUCKETS) + 1


def empty() -> Snapshot:
    return {"upstreams": {}, "retries": 0, "client_errors": {}, "bytes_received": 0, "bytes_sent": 0,
            "queued": 0, "queue_wait_counts": [0] * _BUCKETS, "queue_wait_sum": 0.0}


def snapshot(stats: ProxyStats) -> Snapshot:
    """One process's counters (``queued`` is a gauge, but it is this process's own queue)."""
    return {
        "upstreams": {
            worker_id: {
                "requests": [[method, code, count] for (method, code), count in upstream.requests.items()],
                "duration_counts": list(upstream.duration_counts),
                "duration_sum": upstream.duration_sum,
                "connect_errors": upstream.connect_errors,
            }
            for worker_id, upstream in stats.upstreams.items()
        },
        "retries": stats.retries,
        "client_errors": dict(stats.client_errors),
        "bytes_received": stats.bytes_received,
        "bytes_sent": stats.bytes_sent,
        "queued": stats.queued,
        "queue_wait_counts": list(stats.queue_wait_counts),
        "queue_wait_sum": stats.queue_wait_sum,
    }


def _add_lists(into: list[Any], more: list[Any]) -> list[Any]:
    return [a + b for a, b in zip(into, more)] if len(into) == len(more) else list(into)


def add(total: Snapshot, more: Snapshot, *, with_gauges: bool = True) -> Snapshot:
    """``total + more`` (a new dict). ``with_gauges=False`` leaves ``queued`` out: a dead
    process's queue is gone, so its last value must not be folded into the base."""
    upstreams = {worker_id: dict(entry) for worker_id, entry in total["upstreams"].items()}
    for worker_id, entry in more["upstreams"].items():
        mine = upstreams.get(worker_id)
        if mine is None:
            upstreams[worker_id] = {"requests": [list(r) for r in entry["requests"]],
                                    "duration_counts": list(entry["duration_counts"]),
                                    "duration_sum": entry["duration_sum"],
                                    "connect_errors": entry["connect_errors"]}
            continue
        counts: dict[tuple[str, int], int] = {(m, c): n for m, c, n in mine["requests"]}
        for method, code, count in entry["requests"]:
            counts[(method, code)] = counts.get((method, code), 0) + count
        mine["requests"] = [[m, c, n] for (m, c), n in counts.items()]
        mine["duration_counts"] = _add_lists(mine["duration_counts"], entry["duration_counts"])
        mine["duration_sum"] = mine["duration_sum"] + entry["duration_sum"]
        mine["connect_errors"] = mine["connect_errors"] + entry["connect_errors"]
    client_errors = dict(total["client_errors"])
    for reason, count in more["client_errors"].items():
        client_errors[reason] = client_errors.get(reason, 0) + count
    return {
        "upstreams": upstreams,
        "retries": total["retries"] + more["retries"],
        "client_errors": client_errors,
        "bytes_received": total["bytes_received"] + more["bytes_received"],
        "bytes_sent": total["bytes_sent"] + more["bytes_sent"],
        "queued": total["queued"] + (more["queued"] if with_gauges else 0),
        "queue_wait_counts": _add_lists(total["queue_wait_counts"], more["queue_wait_counts"]),
        "queue_wait_sum": total["queue_wait_sum"] + more["queue_wait_sum"],
    }


def forget(total: Snapshot, worker_id: str) -> None:
    """A removed worker: its series leave ``/metrics``, as with one proxy process."""
    total["upstreams"].pop(worker_id, None)


def fill(stats: ProxyStats, total: Snapshot, gauges: dict[str, tuple[int, int]]) -> None:
    """Make ``stats`` (the object ``/metrics`` and ``fleet status`` read) show ``total``, with
    ``gauges`` (worker id -> fleet-wide in-flight, WebSockets) from the load table."""
    upstreams: dict[str, UpstreamStats] = {}
    for worker_id in {*total["upstreams"], *gauges}:
        upstream = UpstreamStats(worker_id)
        entry = total["upstreams"].get(worker_id)
        if entry is not None:
            upstream.requests = {(method, code): count for method, code, count in entry["requests"]}
            upstream.duration_counts = list(entry["duration_counts"])
            upstream.duration_sum = entry["duration_sum"]
            upstream.connect_errors = entry["connect_errors"]
        upstream.active_requests, upstream.websockets = gauges.get(worker_id, (0, 0))
        upstreams[worker_id] = upstream
    stats.upstreams.clear()
    stats.upstreams.update(upstreams)
    stats.retries = total["retries"]
    stats.client_errors = dict(total["client_errors"])
    stats.bytes_received = total["bytes_received"]
    stats.bytes_sent = total["bytes_sent"]
    stats.queued = total["queued"]
    stats.queue_wait_counts = list(total["queue_wait_counts"])
    stats.queue_wait_sum = total["queue_wait_sum"]


__all__ = ["Snapshot", "add", "empty", "fill", "forget", "snapshot"]
