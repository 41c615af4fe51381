"""``Balancer``: the proxy's listeners and its public interface for the rest of fleet.

The runner (``fleet up``) and ``fleet balance`` drive it the same way: ``add_upstream`` /
``set_ready`` / ``remove_upstream`` as workers come and go, ``add_local_route`` for
``/metrics``, and on shutdown ``stop_accepting`` -> ``drain`` -> ``close``. Everything that
touches request bytes lives in ``balancer.protocol`` and ``balancer.upstream``.

``start`` binds before anything else happens, so a port in use fails fast and names its owner;
``port`` is the port actually bound (port 0 works in tests).
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
import stat
from typing import Any, Callable

from fleet.balancer.policy import UpstreamSet
from fleet.balancer.protocol import ClientConnection, ProxyContext
from fleet.balancer.stats import ProxyStats
from fleet.config import Config
from fleet.ports import in_use_error
from fleet.tasks import cancel_and_wait

SWEEP_INTERVAL = 1.0
BACKLOG = 4096


def raise_open_files_limit() -> int:
    """A proxy holds two descriptors per connection: use the hard limit, as nginx's
    ``worker_rlimit_nofile`` would. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class Balancer:
    def __init__(self, config: Config, stats: ProxyStats | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else ProxyStats()
        self.upstreams = UpstreamSet(self.stats)
        access_log = None
        if config.access_log:
            access_log = log or (lambda line: print(f"fleet | {line}", flush=True))
        self.context = ProxyContext(config, self.stats, self.upstreams, access_log)
        self.port: int | None = None
        self._servers: list[Any] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._unix_path: str | None = None

    # -- listeners ---------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        config = self.config
        if not config.ssl_certfile:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password=config.ssl_password)
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def start(self) -> None:
        """Bind the port (and unix socket) and start serving. Raises ``PortInUseError``."""
        config = self.config
        loop = asyncio.get_running_loop()
        raise_open_files_limit()
        context = self._ssl_context()
        factory = lambda: ClientConnection(self.context)  # noqa: E731
        try:
            server = await loop.create_server(factory, host=config.address, port=config.port,
                                              reuse_address=True, backlog=BACKLOG, ssl=context)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use_error(config.address, config.port) from None
            raise
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if config.unix_socket:
            try:
                await self._start_unix(loop, factory, context)
            except OSError:
                await self.close()
                raise
        self._sweeper = loop.create_task(self._sweep())

    async def _start_unix(self, loop: asyncio.AbstractEventLoop, factory: Any, context: Any) -> None:
        path = self.config.unix_socket
        assert path
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise OSError(errno.EEXIST, f"--unix-socket {path} exists and is not a socket")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(path)
                except OSError:
                    os.unlink(path)  # stale: nobody listens there
                else:
                    raise OSError(errno.EADDRINUSE, f"unix socket {path} is already in use")
        server = await loop.create_unix_server(factory, path=path, backlog=BACKLOG, ssl=context)
        self._servers.append(server)
        self._unix_path = path

    async def _sweep(self) -> None:
        context = self.context
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for client in list(context.clients):
                client.sweep(now)

    # -- upstreams -----------------------------------------------------------------------------
    def add_upstream(self, upstream_id: str, host: str, port: int, ready: bool = False) -> None:
        self.upstreams.add(upstream_id, host, port, ready)

    def set_ready(self, upstream_id: str, ready: bool) -> None:
        upstream = self.upstreams.set_ready(upstream_id, ready)
        if upstream is not None and not ready:
            self._close_idle(upstream)

    # STAND-IN (generations branch): minimal set_draining / wait_idle so the supervisor's
    # reload can be tested end to end; the core rewrite provides the real ones (wait_idle as
    # a future resolved by the request/WebSocket counters) and replaces these at merge.
    def set_draining(self, upstream_id: str) -> None:
        """No new unpinned clients for ``upstream_id``; requests pinned to it still reach it."""
        upstream = self.upstreams.set_draining(upstream_id)
        if upstream is not None:
            self._close_idle(upstream)

    async def wait_idle(self, upstream_id: str, timeout: float | None) -> bool:
        """True once ``upstream_id`` has no in-flight HTTP request and no open WebSocket;
        False at the timeout. STAND-IN: polls the counters (the real one waits on a future)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            stats = self.stats.upstreams.get(upstream_id)
            if stats is None or stats.active_requests + stats.websockets == 0:
                return True
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    def remove_upstream(self, upstream_id: str) -> None:
        upstream = self.upstreams.remove(upstream_id)
        if upstream is not None:
            self._close_idle(upstream)

    @staticmethod
    def _close_idle(upstream: Any) -> None:
        """A worker going away: its pooled connections would only fail later requests."""
        idle, upstream.idle = upstream.idle, []
        for conn in idle:
            conn.close()

    def active_requests(self, upstream_id: str) -> int:
        """In-flight HTTP requests only: what a drain waits for. An open WebSocket lives as long
        as its page, so waiting for it would stall every reload for --graceful-timeout."""
        stats = self.stats.upstreams.get(upstream_id)
        return stats.active_requests if stats is not None else 0

    def add_local_route(self, path: str, handler: Callable[[], tuple[int, str, bytes]]) -> None:
        """Serve ``path`` from the proxy itself (``/metrics``); other paths go to workers."""
        self.context.local_routes[path.encode()] = handler

    # -- shutdown ------------------------------------------------------------------------------
    def in_flight(self) -> int:
        return sum(len(client.queue) for client in self.context.clients)

    async def stop_accepting(self) -> None:
        """Close the listeners; keep-alive connections between requests are closed too."""
        self.context.closing = True
        for server in self._servers:
            server.close()
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
        self.context.closing = True
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
            self._sweeper = None
        for server in self._servers:
            server.close()
        self._servers = []
        for client in list(self.context.clients):
            client.close()
            if client.tunnel is not None:
                client.tunnel.close()
        for upstream in self.upstreams:
            self._close_idle(upstream)
        if self._unix_path is not None:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None
        await asyncio.sleep(0)  # let transports run their close callbacks
