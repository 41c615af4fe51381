"""The worker side of the proxy: one ``UpstreamConnection`` per TCP connection to a worker.

It parses the worker's responses with ``httptools`` and hands head, body pieces and the end of
each response to the ``contracts.ResponseSink`` it is attached to (a client connection's
``response.Responder``); between requests it waits in its ``Upstream``'s idle pool (below).
After a ``101 Switching Protocols`` it becomes a raw byte pipe (WebSocket relay).

The client side drives it only through ``contracts.WorkerLink`` (``send``/``send_many``,
``pause_reading``/``resume_reading``, ``become_tunnel``, ``release``, ``close``): nothing outside
this module writes to its transport. It writes to the client only through the sink's methods,
and never chooses a worker or retries; those are the client side's decisions.

The idle pool is like nginx's ``keepalive N`` in an ``upstream`` block: at most
``MAX_IDLE_PER_UPSTREAM`` idle connections per worker; a worker that goes away (not ready,
removed, or one of its pooled connections found dead) loses its whole pool, since the others
would only fail later requests the same way.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools

from fleet.balancer.contracts import ResponseSink
from fleet.balancer.exchange import Exchange
from fleet.balancer.flow import PEER_FULL, ReadFlow
from fleet.balancer.head import status_reason
from fleet.balancer.policy import Upstream
from fleet.tasks import with_timeout

if TYPE_CHECKING:
    from fleet.balancer.context import ProxyContext

WRITE_HIGH_WATER = 64 * 1024
# Idle keep-alive connections kept per worker (nginx's ``keepalive 64`` in the bench config).
MAX_IDLE_PER_UPSTREAM = 64
# A worker's response head larger than this is a broken worker (llhttp sets no bound itself).
MAX_RESPONSE_HEAD = 1024 * 1024


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("proxy", "upstream", "transport", "parser", "sink", "exchange", "tunnel",
                 "got_bytes", "sent", "head_done", "until_close", "interim", "head_request",
                 "head_bytes", "flow", "closed", "reused", "carried_upgrade", "reads")

    def __init__(self, proxy: "ProxyContext", upstream: Upstream) -> None:
        self.proxy = proxy
        self.upstream = upstream
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None  # the client side of the current exchange
        self.exchange: Exchange | None = None
        self.tunnel: ResponseSink | None = None  # the client side, after a 101
        self.got_bytes = False  # the worker answered something to the current exchange
        self.sent = False  # request bytes of the current exchange went to the worker
        self.head_done = False
        self.until_close = False  # the response's body ends when the worker closes
        self.interim = False
        self.head_request = False
        # The bytes of the response being read, from its first byte until its head is complete:
        # the head goes to the client as those bytes, edited (``head.response_head_raw``), so
        # no header costs a Python call of its own.
        self.head_bytes = b""
        self.flow = ReadFlow()
        self.closed = False
        self.reused = False  # it has carried an earlier exchange (it came from the pool)
        self.carried_upgrade = False  # an Upgrade went through it: never pooled again
        self.reads = 0  # data_received calls: progress, for the sweep

    # -- lifecycle ---------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flow.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def attach(self, sink: ResponseSink, exchange: Exchange) -> None:
        self.sink = sink
        self.exchange = exchange
        self.got_bytes = False
        self.sent = False
        self.head_done = False
        self.until_close = False
        self.interim = False
        request = exchange.request
        self.head_request = request.method == b"HEAD"  # type: ignore[union-attr]
        if request.websocket:  # type: ignore[union-attr]
            self.carried_upgrade = True
        self.head_bytes = b""

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.sent = True
            self.transport.write(data)

    def send_many(self, pieces: list[bytes]) -> None:
        if not self.closed:
            self.sent = True
            self.transport.writelines(pieces)

    def become_tunnel(self, sink: ResponseSink) -> None:
        self.sink = None
        self.exchange = None
        self.tunnel = sink

    def drop_tunnel(self) -> None:
        self.tunnel = None
        self.close()

    def release(self, reusable: bool) -> None:
        """The exchange is over: back to the idle pool if the connection can carry another."""
        self.sink = None
        self.exchange = None
        if reusable and not self.closed and not self.carried_upgrade:
            # put_idle, inline: this runs for every request.
            upstream = self.upstream
            idle = upstream.idle
            if upstream.ready and not self.proxy.closing and len(idle) < MAX_IDLE_PER_UPSTREAM:
                idle.append(self)
                if self.flow.reasons:
                    self.flow.resume(PEER_FULL)
                self.reused = True
                return
        self.close()

    def close(self) -> None:
        self.sink = None
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.end_tunnel()
            return
        sink = self.sink
        if sink is not None:
            self.sink = None
            exchange = self.exchange
            self.exchange = None
            if exchange is None:
                return
            if self.head_done and self.until_close:
                sink.response_complete(self, exchange, reusable=False)
            else:
                sink.upstream_lost(self, exchange)
            return
        forget(self.upstream, self)

    # -- flow control: the worker's socket is full, stop reading the client ------------------
    def pause_writing(self) -> None:
        sink = self.tunnel or self.sink
        if sink is not None:
            sink.peer_full()

    def resume_writing(self) -> None:
        sink = self.tunnel or self.sink
        if sink is not None:
            sink.peer_ready()

    def pause_reading(self) -> None:
        self.flow.pause(PEER_FULL)

    def resume_reading(self) -> None:
        self.flow.resume(PEER_FULL)

    # -- bytes from the worker ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.reads += 1
        tunnel = self.tunnel
        if tunnel is not None:
            self.proxy.stats.bytes_sent += len(data)
            tunnel.tunnel_write(data)
            return
        batching = self.sink
        if batching is None:
            self.close()  # a worker talking out of turn on an idle connection: not reusable
            return
        self.got_bytes = True
        if not self.head_done:
            head_bytes = self.head_bytes
            if len(head_bytes) > MAX_RESPONSE_HEAD:
                exchange = self.exchange
                self.sink = self.exchange = None
                self.close()
                if exchange is not None:
                    batching.upstream_broken(exchange, "response head too large from worker")
                return
            self.head_bytes = head_bytes + data if head_bytes else data
        batching.start_batch()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            sink, exchange = self.sink, self.exchange
            if sink is not None and exchange is not None:
                sink.upgraded(self, exchange, data[upgrade.args[0]:])
        except httptools.HttpParserError:
            sink, exchange = self.sink, self.exchange
            self.sink = self.exchange = None
            self.close()
            if sink is not None and exchange is not None:
                sink.upstream_broken(exchange, "malformed response from worker")
        finally:
            batching.flush()

    # httptools callbacks (no on_status/on_header: the head is read from ``head_bytes``)
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        sink, exchange = self.sink, self.exchange
        if sink is None or exchange is None:
            return
        # llhttp has accepted the head: it ends at the first empty line of these bytes.
        raw, _, rest = self.head_bytes.partition(b"\r\n\r\n")
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.head_bytes = rest  # the next response's first bytes, if any
            sink.interim_response(status, status_reason(raw.partition(b"\r\n")[0]))
            return
        self.head_bytes = b""
        self.head_done = True
        sink.response_head(self, exchange, status, raw)
        if self.head_request and status != 101:
            # httptools cannot be told a response has no body; a fresh parser for the next one.
            keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self.sink = self.exchange = None
            sink.response_complete(self, exchange, reusable=keep_alive)

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        sink, exchange = self.sink, self.exchange
        if sink is None or exchange is None:
            return
        request = exchange.request
        if request is not None and request.websocket and self.parser.should_upgrade():
            return  # the 101 path: ``upgraded`` follows from the HttpParserUpgrade exception
        self.sink = self.exchange = None
        sink.response_complete(self, exchange, reusable=self.parser.should_keep_alive())


# -- the idle pool of each Upstream ----------------------------------------------------------------
def take_idle(upstream: Upstream) -> UpstreamConnection | None:
    idle = upstream.idle
    while idle:
        conn = idle.pop()
        if not conn.closed:
            return conn
    return None


def put_idle(proxy: ProxyContext, conn: UpstreamConnection) -> bool:
    """Pool ``conn`` if its worker still takes traffic and the pool has room."""
    upstream = conn.upstream
    if upstream.ready and not proxy.closing and len(upstream.idle) < MAX_IDLE_PER_UPSTREAM:
        upstream.idle.append(conn)
        return True
    return False


def forget(upstream: Upstream, conn: UpstreamConnection) -> None:
    """An idle connection closed by the worker."""
    try:
        upstream.idle.remove(conn)
    except ValueError:
        pass


def close_idle(upstream: Upstream) -> None:
    idle, upstream.idle = upstream.idle, []
    for conn in idle:
        conn.close()


async def open_connection(proxy: ProxyContext, upstream: Upstream, timeout: float) -> UpstreamConnection:
    """A new connection to ``upstream``. Raises ``OSError`` or ``asyncio.TimeoutError``."""
    # fleet.tasks.with_timeout, not asyncio.wait_for: a cancel at shutdown is never swallowed.
    _, conn = await with_timeout(
        proxy.loop.create_connection(lambda: UpstreamConnection(proxy, upstream), upstream.host, upstream.port),
        timeout)
    return conn


__all__ = ["MAX_IDLE_PER_UPSTREAM", "MAX_RESPONSE_HEAD", "UpstreamConnection", "WRITE_HIGH_WATER", "close_idle",
           "forget", "open_connection", "put_idle", "take_idle"]
