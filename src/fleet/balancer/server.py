"""``Balancer``: the proxy's listeners and its public interface for the rest of fleet.

The runner (``fleet up``) and ``fleet balance`` drive it the same way: ``add_upstream`` /
``set_ready`` / ``set_draining`` / ``remove_upstream`` as workers come and go, ``wait_idle``
to learn when a draining worker has nothing left in flight, ``add_local_route`` for
``/metrics``, and on shutdown ``stop_accepting`` -> ``drain`` -> ``close``. Everything that
touches request bytes lives in ``balancer.protocol`` and the modules it uses.

The listeners accept connections themselves (``add_reader`` on the listening socket) rather
than through ``loop.create_server``, so that past ``--max-connections`` they can stop
accepting, as HAProxy's ``maxconn`` does: further clients wait in the kernel's backlog
instead of being accepted and answered 503, and accepting resumes below the limit.

Out of descriptors (``balancer.fdbudget``): at most ``Budget.cap`` clients, and a reserve kept
free for the rest of the master; a client past either is shed (503, closed). EMFILE/ENFILE on
``accept`` pauses the listener and a timer retries (as nginx's ``accept_mutex_delay`` and
HAProxy do), so accepting never depends on some other connection ending first.

``start`` binds before anything else happens, so a port in use fails fast and names its owner;
``port`` is the port actually bound (port 0 works in tests).

TLS: one ``SSLContext`` for every listener; ``reload_tls`` (SIGHUP, ``fleet reload``) loads the
certificate and key again into that same context, so new handshakes use the new certificate
while open connections (WebSockets included) carry on. ``--https-redirect-port`` adds a
plain-HTTP listener that only redirects (``balancer.redirect``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import weakref
from typing import Any, Callable, Iterable

from fleet.acceptor import Acceptor
import fleet.balancer.fdbudget as fdbudget
from fleet.balancer.allow import Allowlist
from fleet.balancer.context import CachedRoute, Clock, ProxyContext, render_ttl
# unix_listener and _tcp_listeners: also imported from here by balancer.group.
from fleet.balancer.listeners import _tcp_listeners, connect_or_close, raise_open_files_limit, unix_listener
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.alpnswitch import by_alpn
from fleet.balancer.protocol import ClientConnection
from fleet.balancer.redirect import RedirectConnection
from fleet.balancer.stats import ProxyStats
from fleet.balancer.tlscontext import ServerTLS, server_tls
from fleet.balancer.upstream import close_idle
from fleet.balancer.settings import ProxyViews
from fleet.ports import in_use_error
from fleet.tasks import cancel_and_wait, supervise

SWEEP_INTERVAL = 1.0
ACCEPTS_PER_WAKE = 64  # connections accepted per readiness event (fairness with the rest)
ACCEPT_RETRY = 0.25  # after EMFILE/ENFILE on accept: the listener sleeps this long
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# Below this limit the budget's base is measured again every sweep (/proc/self/fd is cheap
# when small; above it the limit is far away).
MEASURE_BELOW = 65536


class Balancer:
    def __init__(self, views: ProxyViews, stats: ProxyStats | None = None,
                 log: Callable[[str], None] | None = None, *, reuse_port: bool = False,
                 upstream_set: type[UpstreamSet] = UpstreamSet, clock: Clock | None = None) -> None:
        self.views = views  # frozen; a reload replaces them whole (apply)
        self.max_connections = views.limits.max_connections  # read on every accept and close
        # The sweep's and the route caches' time: the loop's (set in start) unless a test gives
        # one. Connections stamp their states with the loop's time, so a clock given here reads
        # that scale (a test's may run ahead of it, to see timeouts pass without waiting).
        self.clock = clock
        # One of several proxy processes on the same port (balancer.group): SO_REUSEPORT.
        self.reuse_port = reuse_port
        self.stats = stats if stats is not None else ProxyStats()
        # upstream_set: balancer.loadtable's fleet-wide choice in a proxy process of several.
        self.upstreams = upstream_set(self.stats, views.limits.worker_max_conns,
                                     secure_cookie=bool(views.tls.ssl_certfile),
                                     cookie_path=views.cookie_prefix or "/", cookie_host=views.host_id)
        self.log = log or (lambda line: print(f"fleet | {line}", flush=True))  # also --access-log's
        self.context = ProxyContext(views.frontend, views.limits, views.tls, views.trust, self.stats,
                                    self.upstreams, self.log if views.access_log else None)
        self.context.on_connection_lost = self._below_limit
        # Every context a connection may still hold (a reload makes a new one): a stop reaches all.
        self._contexts: weakref.WeakSet[ProxyContext] = weakref.WeakSet([self.context])
        self.port: int | None = None
        self._listeners: list[socket.socket] = []
        self.inherited: list[socket.socket] = []  # fleet upgrade: the old master's listeners
        self._accepting = False
        self._handshakes = 0  # accepted sockets not yet a ClientConnection (TLS handshake)
        self._ssl: ssl.SSLContext | None = None
        self._tls: ServerTLS | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None  # the listener's wake-up after EMFILE
        self.budget = fdbudget.Budget(fdbudget.soft_limit(), 0)
        self._base = 0  # descriptors open when the listeners were bound
        self._unix_path: str | None = None
        self._redirect: list[Acceptor] = []
        self.redirect_port: int | None = None

    def apply(self, views: ProxyViews) -> None:
        """A reload's views: new connections get them; a connection keeps the settings it was
        accepted under (as nginx's old workers do). Listeners, ports, upstreams stay as they are."""
        if self.port is not None:  # the ports stay as bound at start (port 0 resolved)
            views = views.bound(self.port, self.redirect_port)
        self.views = views
        self.max_connections, self.upstreams.worker_max_conns = views.limits.max_connections, views.limits.worker_max_conns
        self.context = self.context.renewed(views, self.log if views.access_log else None)
        self._contexts.add(self.context)
        if self._tls is not None:
            self._tls.set_alpn(views.tls)
        self._below_limit()  # a raised --max-connections resumes accepting at once

    def _set_everywhere(self, name: str, value: Any) -> None:
        for context in list(self._contexts):
            setattr(context, name, value)

    # -- listeners ---------------------------------------------------------------------------
    def reload_tls(self) -> str | None:
        """Read --ssl-certfile/--ssl-keyfile again. Returns None when there is no TLS, else a
        message for the log; a certificate that cannot be loaded leaves the old one serving."""
        return None if self._tls is None else self._tls.reload(self.views.tls)

    async def start(self, unix_listener: socket.socket | None = None) -> None:
        """Bind the port (and unix socket) and start serving. Raises ``PortInUseError``.
        ``unix_listener``: a proxy process's inherited --unix-socket listener (the master owns
        the path; every proxy process accepts from the one socket)."""
        where, redirect_port = self.views.frontend, self.views.tls.https_redirect_port
        loop = asyncio.get_running_loop()
        raise_open_files_limit()
        self._tls = server_tls(self.views.tls, self.log)  # balancer.tlscontext: the --domain hooks too
        self._ssl = None if self._tls is None else self._tls.context
        try:
            self._listeners = self.inherited or _tcp_listeners(where.address, where.port, reuse_port=self.reuse_port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use_error(where.address, where.port) from None
            raise
        self.port = self._listeners[0].getsockname()[1]
        if redirect_port is not None:
            try:
                await self._start_redirect(loop)
            except OSError as exc:
                await self.close()
                if exc.errno == errno.EADDRINUSE:
                    raise in_use_error(where.address, redirect_port) from None
                raise
        if unix_listener is not None:
            unix_listener.setblocking(False)
            self._listeners.append(unix_listener)
        elif where.unix_socket and not self.inherited:
            try:
                self._start_unix()
            except OSError:
                await self.close()
                raise
        if not self.views.trust.allow_websocket_origin:
            self.context.use_default_origins(where.address, self.port)
        self._measure(start=True)
        self._resume_accepting()
        if self.clock is None:
            self.clock = loop.time
        self._sweeper = loop.create_task(supervise("the proxy's sweep", self._sweep, self.log))

    async def _start_redirect(self, loop: asyncio.AbstractEventLoop) -> None:
        """The plain-HTTP listener that only redirects. Accepted through ``fleet.acceptor``, not
        ``loop.create_server``: uvloop closes a server's listener for good on one EMFILE."""
        views = self.views
        redirect_port = views.tls.https_redirect_port
        assert redirect_port is not None and self.port is not None
        public_port = self.port
        listeners = _tcp_listeners(views.frontend.address, redirect_port, reuse_port=self.reuse_port)

        def serve(sock: socket.socket) -> None:
            current = self.views  # a reload's settings for the next connection
            protocol = RedirectConnection(public_port, Allowlist(current.trust.allow_host),
                                          current.limits.max_header_size, current.limits.header_timeout,
                                          current.tls.acme_challenges)
            loop.create_task(connect_or_close(loop, sock, protocol))

        self._redirect = [Acceptor(listener, serve, loop) for listener in listeners]
        for acceptor in self._redirect:
            acceptor.start()
        self.redirect_port = listeners[0].getsockname()[1]

    # -- accepting, within --max-connections ---------------------------------------------------
    def _resume_accepting(self) -> None:
        if self._accepting or self.context.closing:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        self._accepting = True

    def _pause_accepting(self) -> None:
        if not self._accepting:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.remove_reader(listener.fileno())
        self._accepting = False

    def _connections(self) -> int:
        return len(self.context.clients) + self._handshakes

    def _below_limit(self) -> None:
        limit = self.max_connections
        if not self._accepting and (not limit or self._connections() < limit) and self._listeners:
            self._resume_accepting()

    def _measure(self, *, start: bool = False) -> None:
        """The budget from the limit in force now (``prlimit`` may change it under a running
        fleet) and what the process holds besides clients and worker sockets."""
        limit = fdbudget.soft_limit()
        if start:
            self._base = fdbudget.open_descriptors()
        budget = fdbudget.Budget(limit, self._base)
        if limit <= MEASURE_BELOW:
            upstream = self._pooled() + sum(u.stats.active_requests + u.stats.websockets for u in self.upstreams)
            budget = budget.measured(fdbudget.open_descriptors(), len(self.context.clients), upstream)
        self.budget = budget

    def _pooled(self) -> int:
        return sum(len(upstream.idle) for upstream in self.upstreams)

    def _retry_accepting(self) -> None:
        self._retry = None
        self._below_limit()

    def _out_of_descriptors(self, code: int) -> None:
        """EMFILE and the like on accept: the connection stays in the backlog; the listener
        sleeps ``ACCEPT_RETRY`` and tries again (no busy loop, and no waiting for some other
        connection to end: there may be none)."""
        self.stats.client_error("accept_" + errno.errorcode[code].lower())
        self._pause_accepting()
        if self._retry is None and not self.context.closing:
            self._retry = asyncio.get_running_loop().call_later(ACCEPT_RETRY, self._retry_accepting)

    def _shed(self, sock: socket.socket) -> None:
        """A client past the descriptor budget: a short 503 (plain HTTP only) and closed. Idle
        pooled worker connections go first: they are the cheapest descriptors to give back."""
        self.stats.client_error("shed_out_of_descriptors")
        for upstream in self.upstreams:
            close_idle(upstream)
        if self._ssl is None:
            try:
                sock.send(fdbudget.SHED_ANSWER)
            except OSError:
                pass
        sock.close()

    def _accept(self, listener: socket.socket) -> None:
        limit = self.max_connections
        loop = asyncio.get_running_loop()
        budget = self.budget
        limit_now = fdbudget.soft_limit()  # one getrlimit per wake: prlimit can lower it any time
        if limit_now != budget.limit:
            budget = self.budget = fdbudget.Budget(limit_now, budget.base)
        for _ in range(ACCEPTS_PER_WAKE):
            if limit and self._connections() >= limit:
                self._pause_accepting()  # the rest wait in the backlog, as with HAProxy maxconn
                return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc.errno)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if budget.must_shed(sock.fileno(), self._connections(), self._pooled()):
                self._shed(sock)
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshakes += 1
            loop.create_task(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            context = self.context
            factory = (lambda: ClientConnection(context)) if self._ssl is None else (lambda: by_alpn(context))
            await loop.connect_accepted_socket(factory, sock, ssl=self._ssl)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            sock.close()  # a failed TLS handshake: nothing to serve
        except BaseException:
            sock.close()  # an accepted socket always gets a reader or is closed, never left
            raise
        finally:
            self._handshakes -= 1
            self._below_limit()

    def _start_unix(self) -> None:
        path = self.views.frontend.unix_socket
        assert path
        self._listeners.append(unix_listener(path))
        self._unix_path = path

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            assert self.clock is not None
            self._measure()
            self.sweep(self.clock())

    def sweep(self, now: float) -> None:
        """One pass of the timeouts as of ``now`` (on ``clock``'s scale): the timer calls it
        every ``SWEEP_INTERVAL``; a test calls it with the time it wants to have passed."""
        context = self.context
        if context.waiting:
            # A worker kept out by a connect error (``mark_down``) is back once its time
            # passes, with no event to say so: queued requests look again every sweep.
            context.wake()
        for client in list(context.clients):
            client.sweep(now)

    # -- upstreams -----------------------------------------------------------------------------
    def add_upstream(self, upstream_id: str, host: str, port: int, ready: bool = False) -> None:
        self.upstreams.add(upstream_id, host, port, ready)
        if ready:
            self.context.wake()

    def set_ready(self, upstream_id: str, ready: bool) -> None:
        upstream = self.upstreams.set_ready(upstream_id, ready)
        if upstream is not None and not ready:
            close_idle(upstream)  # its pooled connections would only fail later requests
        if ready:
            self.context.wake()

    def set_draining(self, upstream_id: str, draining: bool = True) -> None:
        """No new clients for this worker; requests whose affinity cookie names it still go
        to it while it is ready (a reconnecting page finds its session there)."""
        upstream = self.upstreams.set_draining(upstream_id, draining)
        if upstream is not None and draining:
            close_idle(upstream)  # pinned requests are few: no need to keep its pool warm
        if not draining:
            self.context.wake()

    def remove_upstream(self, upstream_id: str) -> None:
        upstream = self.upstreams.remove(upstream_id)
        if upstream is not None:
            close_idle(upstream)
            upstream.notify_if_idle()

    async def wait_idle(self, upstream_id: str, timeout: float | None) -> bool:
        """Resolves when the worker has no in-flight HTTP request and no open WebSocket (True),
        or after ``timeout`` seconds (False). A worker fleet does not know is idle."""
        upstream = self.upstreams.get(upstream_id)
        if upstream is None:
            stats = self.stats.upstreams.get(upstream_id)
            return stats is None or (stats.active_requests <= 0 and stats.websockets <= 0)
        if upstream.stats.active_requests <= 0 and upstream.stats.websockets <= 0:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        upstream.idle_waiters.append(future)
        try:
            # asyncio.wait, not wait_for: it never swallows a cancellation (fleet.tasks).
            done, _ = await asyncio.wait({future}, timeout=timeout)
            return bool(done) and future.result()
        finally:
            if future in upstream.idle_waiters:
                upstream.idle_waiters.remove(future)

    def active_requests(self, upstream_id: str) -> int:
        """In-flight HTTP requests only: what a drain waits for. An open WebSocket lives as long
        as its page, so waiting for it would stall every reload for --graceful-timeout."""
        stats = self.stats.upstreams.get(upstream_id)
        return stats.active_requests if stats is not None else 0

    def serve_bokeh(self, static_roots: Iterable[Any]) -> None:
        """A fleet of Bokeh apps: route by Bokeh session id (with --sticky) and answer
        ``static_roots`` (``static_files.bokeh_roots``) from memory (``balancer.bokeh_routing``).
        Called again after each reload, with an empty cache: the files the new generation ships."""
        from fleet.balancer.bokeh_routing import routing_for

        self._set_everywhere("bokeh", routing_for(self.views.frontend, static_roots))

    def add_local_route(self, path: str, handler: Callable[[], tuple[int, str, bytes]],
                        headers: Iterable[tuple[str, str]] = ()) -> None:
        """Serve ``path`` from the proxy itself (``/metrics``); other paths go to workers.
        Only clients inside ``--metrics-allow`` see it (others get 404); the answer is
        rendered at most once a second (``FLEET_METRICS_TTL``). ``headers``: extra response headers."""
        clock = self.clock or asyncio.get_running_loop().time
        self.context.local_routes[path.encode()] = CachedRoute(handler, clock, render_ttl(os.environ),
                                                               headers=headers)

    # -- shutdown ------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(client.in_flight() for client in self.context.clients)

    def _close_listeners(self) -> None:
        self._pause_accepting()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for acceptor in self._redirect:
            acceptor.close()
        self._redirect = []

    async def stop_accepting(self) -> None:
        """Close the listeners; keep-alive connections between requests are closed too."""
        self._set_everywhere("closing", True)
        self._close_listeners()
        for client in list(self.context.clients):
            client.close_if_idle()

    async def drain(self, timeout: float) -> bool:
        """Wait until no HTTP request is in flight (WebSockets are not waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.context.clients):
            client.close_if_idle()
        return not self.in_flight()

    async def close(self) -> None:
        """Close every connection, client and worker side, and the listeners."""
        self._set_everywhere("closing", True)
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
            self._sweeper = None
        self._close_listeners()
        for client in list(self.context.clients):
            client.close()
            if client.tunnel is not None:
                client.tunnel.close()
        for upstream in self.upstreams:
            close_idle(upstream)
        if self._unix_path is not None:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None
        await asyncio.sleep(0)  # let transports run their close callbacks
