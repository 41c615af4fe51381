"""Prometheus metrics: fleet's own ``CollectorRegistry`` and the collectors that fill it.

Nothing here is touched per request. The proxy bumps plain integers in
``fleet.balancer.stats.ProxyStats``; the supervisor keeps ``WorkerInfo`` snapshots; at scrape
time the collectors below turn both into metric families, and read each worker's CPU and
memory with psutil over the worker's whole process tree (a ``--cmd`` worker may be a shell
with the real server as its child). That keeps counting off the hot path: the bench measures
the proxy with metrics on and off.

Names follow the design's table (``_total`` counters, seconds, bytes, a ``worker`` label).

The ``worker`` label of ``fleet up`` is the worker's *slot*, the port it holds: ``w<i>`` in the
``--base-port`` block, ``s<i>`` in the ``--surge-base-port`` block (``supervisor.generations``).
Worker ids (``g3w1``) change with every reload; slots do not, so reloads and recycles never
grow the number of series. ``fleet_worker_info{worker,generation}`` says which generation
holds a slot, ``fleet_worker_draining{worker}`` which slots drain. A removed worker's
counters are forgotten; the next worker on its slot starts from 0 (a counter reset, which
``rate()`` handles).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fleet.balancer.stats import DURATION_BUCKETS, ProxyStats
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.policy import WorkerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ProxyCollector(Collector):
    """Exports the proxy's counters (requests, latency, connections, errors, bytes)."""

    def __init__(self, stats: ProxyStats, label: Callable[[str], str] | None = None) -> None:
        self._stats = stats
        self._label = label or (lambda worker_id: worker_id)

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            "fleet_requests", "HTTP responses relayed, by worker, method and status code.",
            labels=["worker", "method", "code"],
        )
        duration = HistogramMetricFamily(
            "fleet_request_duration_seconds",
            "Time from the request reaching the proxy to the worker's response head.",
            labels=["worker"],
        )
        active = GaugeMetricFamily(
            "fleet_active_requests", "In-flight HTTP requests.", labels=["worker"]
        )
        websockets = GaugeMetricFamily(
            "fleet_websocket_connections", "Open upgraded (WebSocket) connections.", labels=["worker"]
        )
        connect_errors = CounterMetricFamily(
            "fleet_upstream_connect_errors", "Failed connections to a worker.", labels=["worker"]
        )
        label = self._label
        for upstream_id, upstream in sorted(stats.upstreams.items()):
            worker_id = label(upstream_id)
            for (method, code), count in sorted(upstream.requests.items()):
                requests.add_metric([worker_id, method, str(code)], count)
            duration.add_metric([worker_id], _cumulative_buckets(upstream.duration_counts),
                                upstream.duration_sum)
            active.add_metric([worker_id], upstream.active_requests)
            websockets.add_metric([worker_id], upstream.websockets)
            connect_errors.add_metric([worker_id], upstream.connect_errors)
        yield from (requests, duration, active, websockets, connect_errors)

        yield CounterMetricFamily(
            "fleet_retries", "Requests sent again to a worker after a failed attempt (connect error, "
            "connection closed before any answer to an idempotent request).",
            value=stats.retries,
        )
        client_errors = CounterMetricFamily(
            "fleet_client_errors", "Requests the proxy refused itself, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.client_errors.items()):
            client_errors.add_metric([reason], count)
        yield client_errors
        yield CounterMetricFamily(
            "fleet_bytes_received", "Bytes received from clients.", value=stats.bytes_received
        )
        yield CounterMetricFamily("fleet_bytes_sent", "Bytes sent to clients.", value=stats.bytes_sent)
        yield GaugeMetricFamily(
            "fleet_queue_length", "Requests waiting for a worker (none ready, or all at --worker-max-conns).",
            value=stats.queued,
        )
        queue_wait = HistogramMetricFamily(
            "fleet_queue_wait_seconds", "Time requests spent waiting for a worker (served or timed out).",
        )
        queue_wait.add_metric([], _cumulative_buckets(stats.queue_wait_counts), stats.queue_wait_sum)
        yield queue_wait


def _cumulative_buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*DURATION_BUCKETS, math.inf), counts):
        running += count
        buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
    return buckets


def tree_usage(pid: int) -> tuple[float, int] | None:
    """CPU seconds and resident bytes of a process and its descendants, or None if it is gone.

    CPU includes reaped children's time (``children_user``/``children_system``), so a worker
    that runs short-lived subprocesses is not under-counted.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu = 0.0
    rss = 0
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu += times.user + times.system
                if process is root:
                    cpu += times.children_user + times.children_system
                rss += process.memory_info().rss
        except psutil.Error:
            continue  # exited between listing and reading: its time went to its parent
    return cpu, rss


class WorkerCollector(Collector):
    """Exports the supervisor's view of each worker, plus psutil readings taken now."""

    def __init__(self, workers: Callable[[], Iterable[WorkerInfo]], desired: Callable[[], int],
                 recycles: Callable[[], Mapping[str, int]] | None = None,
                 loop_lags: Callable[[], Mapping[str, float]] | None = None,
                 config_reloads: Callable[[], Mapping[str, int]] | None = None,
                 upgrades: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._workers = workers
        self._upgrades = upgrades
        self._config_reloads = config_reloads
        self._desired = desired
        self._recycles = recycles or (lambda: {})
        self._loop_lags = loop_lags

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fleet_worker_up", "1 if the worker is ready for traffic.", labels=["worker"])
        restarts = CounterMetricFamily(
            "fleet_worker_restarts", "Processes started for this worker after its first.", labels=["worker"]
        )
        crash_looping = GaugeMetricFamily(
            "fleet_worker_crash_looping", "1 while the worker keeps dying soon after its start.",
            labels=["worker"],
        )
        cpu = CounterMetricFamily(
            "fleet_worker_cpu_seconds", "CPU time of the worker's process tree (psutil, at scrape).",
            labels=["worker"],
        )
        rss = GaugeMetricFamily(
            "fleet_worker_resident_memory_bytes", "Resident memory of the worker's process tree.",
            labels=["worker"],
        )
        start_time = GaugeMetricFamily(
            "fleet_worker_start_time_seconds", "Unix time the worker's current process started.",
            labels=["worker"],
        )
        info_family = GaugeMetricFamily(
            "fleet_worker_info", "1 per slot: the generation of the worker that holds it.",
            labels=["worker", "generation"],
        )
        draining = GaugeMetricFamily(
            "fleet_worker_draining", "1 while the worker drains (replaced, finishing its connections).",
            labels=["worker"],
        )
        infos = sorted(self._workers(), key=lambda w: w.label)
        for info in infos:
            worker = info.label
            up.add_metric([worker], 1.0 if info.ready else 0.0)
            restarts.add_metric([worker], info.restarts)
            crash_looping.add_metric([worker], 1.0 if info.crash_looping else 0.0)
            info_family.add_metric([worker, str(info.generation)], 1.0)
            draining.add_metric([worker], 1.0 if info.state is WorkerState.DRAINING else 0.0)
            if info.started_at is not None and info.pid is not None:
                start_time.add_metric([worker], info.started_at)
            usage = tree_usage(info.pid) if info.pid is not None else None
            if usage is not None:
                cpu.add_metric([worker], usage[0])
                rss.add_metric([worker], usage[1])
        yield from (up, restarts, crash_looping, cpu, rss, start_time, info_family, draining)
        recycles = CounterMetricFamily(
            "fleet_worker_recycles", "Workers replaced on purpose, by reason (max_requests, max_age, "
            "max_memory, max_memory_hard, hung); reloads are not counted.", labels=["reason"],
        )
        for reason, count in sorted(self._recycles().items()):
            recycles.add_metric([reason], count)
        yield recycles
        if self._config_reloads is not None:
            reloads = CounterMetricFamily(
                "fleet_config_reloads", "Configuration reloads (fleet reload, SIGHUP) by result: applied, "
                "partial (some changes not possible live), refused (invalid; nothing changed).",
                labels=["result"])
            for result, count in sorted(self._config_reloads().items()):
                reloads.add_metric([result], count)
            yield reloads
        if self._upgrades is not None:
            upgrades = CounterMetricFamily(
                "fleet_upgrades", "fleet upgrade (SIGUSR2) by result: done, refused (the new code failed its "
                "preflight or the fleet was busy; nothing changed), failed (execv failed; the old fleet serves on).",
                labels=["result"])
            for result, count in sorted(self._upgrades().items()):
                upgrades.add_metric([result], count)
            yield upgrades
        if self._loop_lags is not None:
            lag = GaugeMetricFamily(
                "fleet_worker_event_loop_lag_seconds",
                "How late the worker's event loop ran its heartbeat (grows while the loop is "
                "blocked); APP workers with --worker-timeout only.",
                labels=["worker"],
            )
            slots = {info.id: info.label for info in infos}
            for worker_id, seconds in sorted(self._loop_lags().items()):
                if worker_id in slots:
                    lag.add_metric([slots[worker_id]], seconds)
            yield lag
        yield GaugeMetricFamily("fleet_workers_desired", "Workers fleet is asked to run.", value=self._desired())


def make_registry(
    stats: ProxyStats | None = None,
    workers: Callable[[], Iterable[WorkerInfo]] | None = None,
    desired: Callable[[], int] | None = None,
    *,
    recycles: Callable[[], Mapping[str, int]] | None = None,
    label: Callable[[str], str] | None = None,
    loop_lags: Callable[[], Mapping[str, float]] | None = None,
    config_reloads: Callable[[], Mapping[str, int]] | None = None,
    upgrades: Callable[[], Mapping[str, int]] | None = None,
) -> CollectorRegistry:
    """A fresh registry with the proxy and/or worker collectors (no global default registry).
    ``label`` maps a proxy upstream id to its ``worker`` label (the slot)."""
    registry = CollectorRegistry(auto_describe=False)
    if stats is not None:
        registry.register(ProxyCollector(stats, label))
    if workers is not None:
        registry.register(WorkerCollector(workers, desired or (lambda: 0), recycles, loop_lags, config_reloads,
                                           upgrades))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def metrics_route(registry: CollectorRegistry) -> Callable[[], tuple[int, str, bytes]]:
    """A handler for ``Balancer.add_local_route``: (status, content type, body)."""

    def handler() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, render(registry)

    return handler


LocalRoute = tuple[Callable[[], tuple[int, str, bytes]], Sequence[tuple[str, str]]]


async def serve_separately(registry: CollectorRegistry, address: str, port: int, path: str,
                           allow: Iterable[str] | None = None,
                           trusted_proxies: Iterable[str] = (),
                           extra_routes: Mapping[str, LocalRoute] | None = None,
                           idle_timeout: float | None = None,
                           clock: Callable[[], float] = time.monotonic) -> "MetricsListener":
    """``--metrics-port``: serve metrics on a listener of their own, on the same event loop.

    On the loop (not prometheus-client's threaded server) because the collectors read dicts
    the proxy mutates on the loop; a scrape from another thread could see them mid-change.
    ``extra_routes`` (path -> (handler, extra headers)): fleet's ``/_fleet/`` routes, which
    live here when there is no proxy (``--no-proxy``); same access rule, same 1 s cache.
    ``idle_timeout``: a keep-alive connection idle this long is closed (``--client-timeout``).
    ``clock``: the cache's time (``FLEET_METRICS_TTL`` its lifetime, as on the proxy port).
    """
    import tornado.httpserver
    import tornado.web

    from fleet.ports import in_use_error

    from fleet.balancer.context import render_ttl

    ttl = render_ttl(os.environ)
    access = MetricsAccess(allow, trusted_proxies)
    routes: dict[str, LocalRoute] = {path: (metrics_route(registry), ())}
    routes.update(extra_routes or {})

    class LocalHandler(tornado.web.RequestHandler):
        def initialize(self, route: LocalRoute) -> None:
            self.route = route

        def get(self) -> None:
            headers = [(name.encode("latin-1"), value.encode("latin-1"))
                       for name, value in self.request.headers.get_all()]
            if not access.allows(self.request.remote_ip or "", headers):
                raise tornado.web.HTTPError(404)
            status, content_type, body = self.route[0]()
            self.set_status(status)
            self.set_header("Content-Type", content_type)
            self.set_header("Cache-Control", "no-store")
            for name, value in self.route[1]:
                self.set_header(name, value)
            self.write(body)

    def cached(handler: Callable[[], tuple[int, str, bytes]]) -> Callable[[], tuple[int, str, bytes]]:
        """Rendered at most once a second, as on the proxy port."""
        cache: list[Any] = [-1e18, None]

        def answer() -> tuple[int, str, bytes]:
            now = clock()
            if now - cache[0] >= ttl:
                cache[:] = [now, handler()]
            return cache[1]  # type: ignore[no-any-return]

        return answer

    app = tornado.web.Application([(re.escape(route_path), LocalHandler, {"route": (cached(handler), extra)})
                                   for route_path, (handler, extra) in routes.items()])
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=idle_timeout)
    try:
        server.listen(port, address)
    except OSError as exc:
        import errno

        if exc.errno == errno.EADDRINUSE:
            raise in_use_error(address, port, "metrics port") from None
        raise
    bound = next(iter(server._sockets.values())).getsockname()[1]
    return MetricsListener(server, bound, access)


class MetricsAccess:
    """Who may read the metrics port (``--metrics-allow``, through ``--trusted-proxy``);
    replaced whole by a live reload, so each request sees one consistent rule."""

    def __init__(self, allow: Iterable[str] | None, trusted_proxies: Iterable[str]) -> None:
        from fleet.balancer.context import AddressRules
        from fleet.balancer.trust import TrustedProxies

        self.rules = AddressRules(allow) if allow is not None else None
        self.trust = TrustedProxies(trusted_proxies)

    def allows(self, peer: str, headers: list[tuple[bytes, bytes]]) -> bool:
        from fleet.balancer.context import client_address

        rules, trust = self.rules, self.trust
        return rules is None or rules.allows(client_address(trust, peer, headers))


class MetricsListener:
    def __init__(self, server: object, port: int, access: MetricsAccess) -> None:
        self._server = server
        self.port = port
        self._access = access

    def renew(self, allow: Iterable[str] | None, trusted_proxies: Iterable[str], idle_timeout: float | None) -> None:
        """A reloaded configuration, for each later request and connection."""
        import copy

        fresh = MetricsAccess(allow, trusted_proxies)
        self._access.rules, self._access.trust = fresh.rules, fresh.trust
        params = copy.copy(self._server.conn_params)  # type: ignore[attr-defined]
        params.idle_connection_timeout = idle_timeout  # a connection keeps the parameters it was accepted with
        self._server.conn_params = params  # type: ignore[attr-defined]

    def close(self) -> None:
        self._server.stop()  # type: ignore[attr-defined]
