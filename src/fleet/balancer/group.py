"""``ProxyGroup``: ``--proxy-processes N`` (N >= 2), the master's side of N proxy processes.

It has ``Balancer``'s interface, so ``fleet up`` and ``fleet balance`` drive one or N proxy
processes the same way. The workers, their generations and their draining stay the master's;
the proxy processes (``balancer.child``) only carry requests. What crosses between processes:

- master -> proxy, JSON lines on one unix socketpair per process: its settings (at start, again on a reload), each
  worker's add / ready / draining / remove with its load-table column, the latest answer of
  each built-in route (``/metrics``, ``/_fleet/...``, rendered by the master every
  ``FLEET_METRICS_TTL`` seconds, 1 by default, from its fleet-wide totals), Bokeh static roots, TLS reload, stop.
- proxy -> master, same socket: started (or the bind error), counter snapshots every
  ``child.STATS_INTERVAL`` (``balancer.snapshot`` adds them up; a dead process's last snapshot
  is folded into a base, so counters stay monotonic), drained.
- both ways, no messages: the load table (``balancer.loadtable``), shared memory with one row
  per proxy process, read by every process's least-connections choice and by the master's
  ``wait_idle`` (polled every ``IDLE_POLL``: the counts change in other processes).

Listeners: every proxy process binds ``--port`` (and ``--https-redirect-port``) with
``SO_REUSEPORT``, so the kernel spreads connections over them by a hash of the 4-tuple; the
master holds the port bound but not listening (it gets no connection, and the port cannot be
taken while a proxy process restarts). ``--unix-socket`` has no ``SO_REUSEPORT``: the master
binds it and every proxy process accepts from that one inherited socket.

Each proxy process is supervised like a worker (``balancer.proxylives``): restarted when it dies, with the workers'
``RestartPolicy`` (crash-loop backoff); its row of gauges is zeroed first, so no phantom load
holds a drain. One spare process waits, already started and imported, to take a dead one's
row: the replacement then serves within the time it takes to bind (Python's start-up alone
can take more than a second on a loaded machine). A ``kill -9`` loses the connections that process held (and those in its accept
queue), nothing else.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import time
from typing import Any, Callable, Iterable

from fleet.balancer import snapshot
from fleet.balancer.context import render_ttl
from fleet.balancer.child import pack
from fleet.balancer.loadtable import Columns, LoadTable
from fleet.balancer.proxylives import CLOSE_WAIT, START_TIMEOUT, ProxyLives, ProxySlot
from fleet.balancer.proxystate import ProxyState
from fleet.balancer.server import _tcp_listeners, unix_listener
from fleet.balancer.stats import ProxyStats
from fleet.balancer.settings import ProxyViews
from fleet.ports import in_use_error
from fleet.tasks import cancel_and_wait

REFRESH_INTERVAL = 0.25  # the master's totals follow the load table this often
IDLE_POLL = 0.05  # wait_idle reads the load table this often


class ProxyGroup(ProxyLives):
    def __init__(self, views: ProxyViews, processes: int, stats: ProxyStats | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        super().__init__(say)
        self.views = views
        self.stats = stats if stats is not None else ProxyStats()
        self.port: int | None = None
        self.redirect_port: int | None = None
        self.slots = [ProxySlot(row) for row in range(processes)]
        self.table = LoadTable.create(processes)
        self.columns = Columns(self._column_busy)
        self._workers: dict[str, dict[str, Any]] = {}  # id -> its add message, kept current
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {}
        self._route_headers: dict[str, list[list[str]]] = {}  # extra headers (the page's CSP)
        self._bokeh: str | None = None
        self._reserved: list[socket.socket] = []
        self._unix: socket.socket | None = None
        self._closed = False
        # The built-in routes' answers are pushed this often: the same lifetime as CachedRoute's.
        self._route_interval = render_ttl(os.environ)

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind (port in use fails fast here, naming its owner), start every proxy process and
        wait until each serves. Raises ``PortInUseError`` or ``OSError``."""
        where, redirect_port = self.views.frontend, self.views.tls.https_redirect_port
        try:
            self._reserved = _tcp_listeners(where.address, where.port, reuse_port=True, listen=False)
        except OSError as exc:
            await self.close()
            if exc.errno == errno.EADDRINUSE:
                raise in_use_error(where.address, where.port) from None
            raise
        self.port = self._reserved[0].getsockname()[1]
        if redirect_port is not None:
            try:
                redirect = _tcp_listeners(where.address, redirect_port, reuse_port=True, listen=False)
            except OSError as exc:
                await self.close()
                if exc.errno == errno.EADDRINUSE:
                    raise in_use_error(where.address, redirect_port) from None
                raise
            self._reserved += redirect
            self.redirect_port = redirect[0].getsockname()[1]
        self.views = self.views.bound(self.port, self.redirect_port)  # port 0 resolved: every process binds the same
        if where.unix_socket:
            try:
                self._unix = unix_listener(where.unix_socket)
            except OSError:
                await self.close()
                raise
        loop = asyncio.get_running_loop()
        for slot in self.slots:
            slot.started = loop.create_future()
            self._tasks.append(loop.create_task(self._keep(slot)))
        started = [s.started for s in self.slots if s.started is not None]
        done, _ = await asyncio.wait(started, timeout=START_TIMEOUT)
        errors = [f.result() for f in done if f.result()]
        if len(done) < len(started):
            errors.append(f"a proxy process did not start listening within {START_TIMEOUT:g} s")
        if errors:
            await self.close()
            raise OSError(errno.EADDRINUSE if "in use" in errors[0] else errno.EIO, errors[0])
        self._tasks.append(loop.create_task(self._render_routes()))
        self._tasks.append(loop.create_task(self._keep_spare()))

    def _welcome(self, slot: ProxySlot) -> None:
        """A new proxy process: everything the master knows, before it takes a request."""
        for message in self._workers.values():
            slot.send(message)
        if self._bokeh is not None:
            slot.send({"op": "bokeh", "roots": self._bokeh})
        for path, handler in self._routes.items():
            slot.send(self._route_message(path, handler))
        if not self._accepting:
            slot.send({"op": "stop_accepting"})

    # -- totals --------------------------------------------------------------------------------
    def _column_busy(self, column: int) -> bool:
        return bool(self.table.active(column) or self.table.websockets(column))

    def _refresh(self) -> None:
        total = self._base
        for slot in self.slots:
            if slot.snapshot is not None:
                total = snapshot.add(total, slot.snapshot)
        gauges = {worker_id: (self.table.active(column), self.table.websockets(column))
                  for worker_id, column in self.columns.items()}
        snapshot.fill(self.stats, total, gauges)

    def _route_message(self, path: str, handler: Callable[[], tuple[int, str, bytes]]) -> dict[str, Any]:
        status, content_type, body = handler()
        return {"op": "route", "path": path, "status": status, "type": content_type,
                "body": body.decode("latin-1"), "headers": self._route_headers.get(path, [])}

    async def _render_routes(self) -> None:
        """Gauges in ``stats`` follow the load table every ``REFRESH_INTERVAL`` (a long request
        changes no counter, so no snapshot says it is still in flight); the built-in routes'
        answers are pushed every ``_route_interval`` (at most every ``REFRESH_INTERVAL``)."""
        loop = asyncio.get_running_loop()
        rendered = loop.time()
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            self._refresh()
            if not self._routes or loop.time() - rendered < self._route_interval:
                continue
            rendered = loop.time()
            for path, handler in self._routes.items():
                message = self._route_message(path, handler)
                for slot in self.slots:
                    slot.send(message)

    # -- Balancer's interface --------------------------------------------------------------------
    def add_upstream(self, upstream_id: str, host: str, port: int, ready: bool = False) -> None:
        column = self.columns.assign(upstream_id, time.monotonic())
        message = {"op": "add", "id": upstream_id, "host": host, "port": port, "ready": ready,
                   "draining": False, "column": column}
        self._workers[upstream_id] = message
        self._broadcast(message)

    def set_ready(self, upstream_id: str, ready: bool) -> None:
        message = self._workers.get(upstream_id)
        if message is not None:
            message["ready"] = ready
            if not ready:
                message["draining"] = False
        self._broadcast({"op": "ready", "id": upstream_id, "ready": ready})

    def set_draining(self, upstream_id: str, draining: bool = True) -> None:
        message = self._workers.get(upstream_id)
        if message is not None:
            message["draining"] = draining
        self._broadcast({"op": "draining", "id": upstream_id, "draining": draining})

    def remove_upstream(self, upstream_id: str) -> None:
        self._workers.pop(upstream_id, None)
        self.columns.release(upstream_id, time.monotonic())
        snapshot.forget(self._base, upstream_id)
        self._broadcast({"op": "remove", "id": upstream_id})

    def _load(self, upstream_id: str) -> tuple[int, int]:
        column = self.columns.get(upstream_id)
        if column is None:
            return 0, 0
        return self.table.active(column), self.table.websockets(column)

    async def wait_idle(self, upstream_id: str, timeout: float | None) -> bool:
        """As ``Balancer.wait_idle``, over every proxy process (the load table, polled)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while max(self._load(upstream_id)) > 0:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(IDLE_POLL)
        return True

    def active_requests(self, upstream_id: str) -> int:
        return self._load(upstream_id)[0]

    def serve_bokeh(self, static_roots: Iterable[Any]) -> None:
        self._bokeh = pack(list(static_roots))
        self._broadcast({"op": "bokeh", "roots": self._bokeh})

    def add_local_route(self, path: str, handler: Callable[[], tuple[int, str, bytes]],
                        headers: Iterable[tuple[str, str]] = ()) -> None:
        """Rendered here from the fleet-wide totals, answered by every proxy process."""
        self._routes[path] = handler
        self._route_headers[path] = [list(pair) for pair in headers]
        self._refresh()
        self._broadcast(self._route_message(path, handler))

    async def apply(self, views: ProxyViews) -> None:
        """A reload's views, in every proxy process (and any started later) before this returns;
        the bound ports stay as resolved at start."""
        self.views = views.bound(self.views.frontend.port, self.views.tls.https_redirect_port)
        self._broadcast({"op": "settings", "views": pack(self.views)})
        await self.settle()

    def reload_tls(self) -> str | None:
        tls = self.views.tls
        if not tls.ssl_certfile:
            return None
        try:  # the same check a proxy process makes: a bad certificate leaves the old one serving
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.ssl_certfile, tls.ssl_keyfile, password=tls.ssl_password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"TLS certificate NOT reloaded, the previous one stays in use: {exc}"
        self._broadcast({"op": "reload_tls"})
        return f"TLS certificate reloaded from {tls.ssl_certfile} ({len(self.slots)} proxy processes)"

    # -- stop ----------------------------------------------------------------------------------
    async def stop_accepting(self) -> None:
        """Every proxy process closes its listeners; returns once each has (``settle``), so
        a connection attempt after this is refused, as with one proxy process."""
        self._accepting = False
        for slot in self.slots:
            if slot.state in (ProxyState.STARTING, ProxyState.SERVING):
                slot.move(ProxyState.STOPPING)
        self._broadcast({"op": "stop_accepting"})
        await self.settle()

    async def drain(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        waits = []
        for slot in self.slots:
            if slot.writer is not None:
                slot.drained = loop.create_future()
                slot.send({"op": "drain", "timeout": timeout})
                waits.append(slot.drained)
        if not waits:
            return True
        done, _ = await asyncio.wait(waits, timeout=timeout + 2.0)
        return len(done) == len(waits) and all(f.result() for f in done)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._broadcast({"op": "close"})
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.writer.close()  # end-of-file before its config: it exits
            procs.append(spare.proc)
        if procs:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=CLOSE_WAIT)
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_WAIT)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for slot in self.slots:
            if slot.state is not ProxyState.STOPPED:  # _keep may have stopped it already
                slot.move(ProxyState.STOPPED)
        self._refresh()
        self.table.close()
        for sock in self._reserved:
            sock.close()
        self._reserved = []
        if self._unix is not None:
            self._unix.close()
            self._unix = None
            try:
                os.unlink(self.views.frontend.unix_socket or "")
            except OSError:
                pass


__all__ = ["ProxyGroup"]
