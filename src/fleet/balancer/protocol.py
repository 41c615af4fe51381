"""The client side of the proxy: what happens to a byte from a browser.

``ClientConnection`` is an ``asyncio.Protocol`` that feeds ``httptools`` and turns each request
into an ``Exchange`` (``balancer.exchange``: one state enum, one transition table): head checked
and rewritten by ``balancer.head``, a worker chosen and the request sent by its
``forward.Forwarder``, the response streamed back by its ``response.Responder``, its timeouts
checked by its ``timeouts.Sweeper`` (the parts call each other through ``balancer.contracts``).
Requests pipelined on one connection queue behind each other and are answered in order.

Memory per connection is bounded, and the bound is the sum of these:
- the request head being read: ``--max-header-size`` (64 KiB) and ``--max-header-count`` (100)
  fields, trailers ``--max-trailer-size`` (8 KiB);
- request bytes held for workers (behind a stalled request, while a worker is chosen or
  connected): ``--max-buffered-request`` (256 KiB) for all of the connection's requests
  together, then the client is no longer read; after an Upgrade head, 64 KiB until the 101;
- each socket's write buffer: 64 KiB high water, past which the other side is not read.
So a client that pipelines, trickles or stops reading costs a few hundred KiB at most.

Timeouts are not timers per request: the balancer sweeps its connections once a second
(``balancer.timeouts``), and every exchange state has its timeout (``exchange.timeout_of``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import httptools

import fleet.balancer.head as heads
from fleet.balancer.context import BUILTIN_PREFIX, ProxyContext
from fleet.balancer.contracts import WorkerLink
from fleet.balancer.exchange import AWAITING_HEAD, DONE, HEAD, PIPELINED, SENDING, Exchange
from fleet.balancer.flow import PIPELINE, ReadFlow
from fleet.balancer.forward import Forwarder
from fleet.balancer.head import LAST_CHUNK, HeadError
from fleet.balancer.response import LINGER_BYTES, Responder
from fleet.balancer.timeouts import Sweeper
from fleet.balancer.upstream import WRITE_HIGH_WATER

# Pipelined requests parsed ahead of the one being answered before the client is paused.
PIPELINE_LIMIT = 64


class ClientConnection(asyncio.Protocol):
    """The read side of a client connection, and the parts it is made of: a ``Forwarder``
    (request bytes to a worker), a ``Responder`` (answers to the client) and a ``Sweeper``
    (timeouts). The parts call each other through ``balancer.contracts``."""

    # Slots: more than 30 instance attributes would leave CPython 3.11 without its fast
    # attribute access (shared-key instance dicts stop there), on every byte's path.
    __slots__ = ("proxy", "transport", "flow", "parser", "queue", "parsing", "client_ip", "peer", "reads",
                 "dead", "eof", "upgrading", "rejection", "responder", "forwarder", "sweep", "_dispatch",
                 "_hold", "_counted_ip", "_url", "_headers", "_head_size", "_trailing", "_trailer_size",
                 "_raw_head", "_fast_head")

    def __init__(self, proxy: ProxyContext) -> None:
        self.proxy = proxy
        self.transport: Any = None
        self.flow = ReadFlow()
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None  # the request whose head or body is being read
        self.client_ip = b"unix"
        self.peer = "unix"
        self.reads = 0  # data_received calls, for the sweep's progress checks
        self.dead = False  # a request was refused: nothing more is read
        self.eof = False  # the client half-closed: answer what it sent, then close
        self.upgrading: Exchange | None = None  # an Upgrade request waiting for its 101
        self.rejection: HeadError | None = None  # raised from a parser callback
        forwarder = self.forwarder = Forwarder(proxy, self.queue, self.flow)
        responder = self.responder = forwarder.responder = Responder(self, forwarder)
        # The balancer's once-a-second sweep calls ``client.sweep(now)`` (timeouts.Sweeper).
        self.sweep = Sweeper(self, responder, forwarder).sweep
        # The forwarder's two per-request calls, bound once (a method lookup on another object
        # per call is measurable on this path).
        self._dispatch = forwarder.dispatch
        self._hold = forwarder.hold
        self._counted_ip: str | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._trailing = False  # the head is done: header fields now are trailers
        self._trailer_size = 0
        self._raw_head = 0
        # head.FAST_REQUEST_HEAD (compiled) unless the peer is a trusted proxy, whose
        # forwarding headers only the Python code reads; None: head.forward_request alone.
        self._fast_head = heads.FAST_REQUEST_HEAD

    @property
    def closed(self) -> bool:
        return self.responder.closed

    @property
    def tunnel(self) -> WorkerLink | None:
        return self.responder.tunnel

    def close(self) -> None:
        self.responder.close()

    # -- connection lifecycle ----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        proxy = self.proxy
        self.transport = self.responder.transport = transport
        self.flow.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
            self.client_ip = self.peer.encode()
        trust = proxy.trust
        if trust.any and trust.is_trusted(self.client_ip):
            self._fast_head = None
        proxy.clients.add(self)
        cap = proxy.max_connections_per_ip
        if cap and not proxy.exempt_from_ip_limits(self.peer):
            count = proxy.per_ip.get(self.peer, 0)
            if count >= cap:
                proxy.stats.client_error("too_many_connections_per_ip")
                self.responder.closed = True
                transport.abort()
                return
            proxy.per_ip[self.peer] = count + 1
            self._counted_ip = self.peer

    def connection_lost(self, exc: Exception | None) -> None:
        responder = self.responder
        responder.closed = True
        counted, self._counted_ip = self._counted_ip, None
        self.proxy.client_gone(self, counted)
        self.end_exchanges()

    def end_exchanges(self) -> None:
        """The client went: its tunnel and every exchange it had end (also an HTTP/2 stream's
        end, ``balancer.h2stream``)."""
        responder = self.responder
        if responder.tunnel is not None:
            tunnel, responder.tunnel = responder.tunnel, None
            tunnel.drop_tunnel()
            responder.end_tunnel()
        exchanges = list(self.queue)
        if self.parsing is not None and self.parsing not in exchanges:
            exchanges.append(self.parsing)
        responder.abandon(exchanges)
        self.queue.clear()
        self.parsing = None

    def pause_writing(self) -> None:
        self.responder.pause_writing()

    def resume_writing(self) -> None:
        self.responder.resume_writing()

    # -- bytes from the client ---------------------------------------------------------------
    def eof_received(self) -> bool | None:
        responder = self.responder
        if responder.tunnel is None and self.queue and not responder.closed:
            self.eof = True  # a half-close ends the requests, not the answers still owed
            return True
        return None

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        proxy = self.proxy
        proxy.stats.bytes_received += len(data)
        responder = self.responder
        tunnel = responder.tunnel
        if tunnel is not None:
            tunnel.send(data)
            return
        if responder.lingering:
            responder.linger_bytes += len(data)
            if responder.linger_bytes > LINGER_BYTES:
                self.transport.abort()
            return
        upgrading = self.upgrading
        if upgrading is not None:
            # Bytes after an Upgrade head: held until the worker's 101, dropped without one.
            self._hold(upgrading, data)
            return
        if self.dead:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange = self.upgrading
            rest = data[upgrade.args[0]:]
            if exchange is None:
                # An upgrade other than WebSocket went through as a plain request (without
                # its Upgrade header); the parser cannot read past it, so nothing more is.
                self.dead = True
                self.flow.pause(PIPELINE)
            elif rest:
                self._hold(exchange, rest)
            return
        except httptools.HttpParserCallbackError:
            rejection = self.rejection
            if rejection is not None:
                self.reject(rejection, self.parsing if self.parsing is not None and self.parsing.request else None)
            elif not (responder.closed or self.dead):
                raise
            return
        except httptools.HttpParserError as exc:
            if not self.dead:
                self.reject(HeadError(400, "malformed", f"malformed request ({exc})"), self.parsing)
            return
        parsing = self.parsing
        if parsing is not None and parsing.request is None:
            self._raw_head += len(data)
            if self._raw_head > proxy.max_header_size * 2 + 16384:
                self.reject(HeadError(431, "head_too_large", "request head too large"))

    def reject(self, rejection: HeadError, exchange: Exchange | None = None) -> None:
        """A request the proxy refuses: its status (counted by reason), then the connection
        closes (``Responder.refuse``); nothing more is read."""
        self.rejection = None
        self.proxy.stats.client_error(rejection.reason)
        if self.responder.closed:
            return
        self.parsing = None
        self.upgrading = None
        self.dead = True
        self.responder.refuse(rejection, exchange)

    # httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.dead or self.responder.closed:
            # The connection is being closed (a refusal, a built-in route's error): what the
            # client pipelined after that is not read, let alone sent to a worker.
            raise HttpParserStop()
        self.parsing = Exchange(self.proxy.loop.time())
        self._url = b""
        if self._headers:
            self._headers = []
        self._head_size = 0
        self._trailing = False
        self._raw_head = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.proxy.max_header_size:
            self._grow_head(0)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailing:
            # A trailer field of a chunked body: not forwarded, only bounded.
            self._trailer_size += len(name) + len(value) + 4
            if self._trailer_size > self.proxy.max_trailer_size:
                self.rejection = HeadError(431, "trailers_too_large", "request trailers too large")
                raise self.rejection
            return
        headers = self._headers
        headers.append((name, value))
        proxy = self.proxy
        if len(headers) > proxy.max_header_count:
            self.rejection = HeadError(431, "too_many_headers", "too many header fields")
            raise self.rejection
        self._head_size += len(name) + len(value) + 4
        if self._head_size > proxy.max_header_size:
            self._grow_head(0)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.proxy.max_header_size:
            self.rejection = HeadError(431, "head_too_large", "request head too large")
            raise self.rejection

    def on_headers_complete(self) -> None:
        proxy = self.proxy
        parser = self.parser
        version = parser.get_http_version()
        upgrade = parser.should_upgrade()
        method = parser.get_method()
        try:
            if version != "1.1" and version != "1.0":
                raise HeadError(400, "bad_version", "only HTTP/1.0 and HTTP/1.1 are supported")
            http10 = version == "1.0"
            keep_alive = parser.should_keep_alive()
            fast = self._fast_head
            # The compiled common case first; None for anything it does not handle (and for
            # every head to refuse): the Python rules decide those.
            request = None if fast is None or upgrade else fast(
                method, self._url, http10, keep_alive, self._headers, self.client_ip, proxy.scheme, proxy.default_host)
            if request is None:
                request = heads.forward_request(
                    method, self._url, http10, keep_alive, upgrade,
                    self._headers, self.client_ip, proxy.scheme, proxy.trust, proxy.default_host)
            if proxy.checks_hosts and not proxy.host_allowed(request.host or b""):
                raise HeadError(421, "bad_host", "Host not allowed")
            if request.content_length is not None and request.content_length > proxy.max_body_size:
                raise HeadError(413, "body_too_large", "request body too large")
            if request.websocket:
                if method != b"GET":
                    raise HeadError(400, "bad_upgrade", "only GET may upgrade to a WebSocket")
                if request.chunked or request.content_length:
                    raise HeadError(400, "bad_upgrade", "a WebSocket handshake has no body")
                if not proxy.origin_allowed(request.origin):
                    raise HeadError(403, "bad_origin", "Origin not allowed")
        except HeadError as rejection:
            self.rejection = rejection
            raise
        self._url = b""
        self._headers = []
        exchange = self.parsing
        if exchange is None:
            exchange = self.parsing = Exchange(proxy.loop.time())
        exchange.request = request
        self._trailing = True
        self._trailer_size = 0
        # exchange.move(PIPELINED), inline: a new exchange is in HEAD, and HEAD -> PIPELINED is
        # the table's first move (PIPELINED has no timeout of its own: no clock read).
        assert exchange.state is HEAD
        exchange.state = PIPELINED
        path = request.path
        routes = proxy.local_routes
        if (routes and path in routes) or (len(path) > 1 and path[1] == 95 and path.startswith(BUILTIN_PREFIX)):  # 95: "_"
            # Built-in routes never reach a worker; to a client outside --metrics-allow they
            # answer the 404 an unknown path gets.
            route = routes.get(path)
            exchange.local = route if route is not None and proxy.builtin_allowed(request.client.decode('latin-1')) else False
        elif proxy.bokeh is not None and proxy.bokeh.static is not None:
            exchange.local = proxy.bokeh.static_hit(request)  # None: a worker's request
        queue = self.queue
        queue.append(exchange)
        if request.websocket:
            self.upgrading = exchange
        elif upgrade:
            request.keep_alive = False
        if len(queue) == 1:
            self._dispatch(exchange)
        elif len(queue) > PIPELINE_LIMIT:
            self.flow.pause(PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.state is DONE:  # not .finished: a property is a call
            return
        if not exchange.body_received:
            exchange.body_started = self.proxy.loop.time()
        exchange.body_received += len(body)
        request = exchange.request
        assert request is not None
        if exchange.body_received > self.proxy.max_body_size:
            self.reject(HeadError(413, "body_too_large", "request body too large"), exchange)
            raise HttpParserStop()
        self._hold(exchange, heads.chunk(body) if request.chunked else body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is None or exchange.state is DONE:  # not .finished: a property is a call
            return
        request = exchange.request
        assert request is not None
        exchange.request_done = True
        if request.chunked:
            self._hold(exchange, LAST_CHUNK)
        if exchange.state is SENDING:
            exchange.move(AWAITING_HEAD, self.proxy.loop.time())  # --upstream-timeout from here
        if not request.keep_alive:
            # RFC 9112 9.6: nothing after a Connection: close request is processed (llhttp
            # would report the bytes as an error, which must not become an answer).
            self.dead = True
            self.flow.pause(PIPELINE)
        if exchange.local is not None and self.queue and self.queue[0] is exchange:
            self._dispatch(exchange)

    def close_if_idle(self) -> None:
        """For a graceful stop: close a keep-alive connection that is between requests."""
        responder = self.responder
        if not self.queue and responder.tunnel is None and self.parsing is None and not responder.lingering:
            responder.close()

    def in_flight(self) -> int:
        return len(self.queue) if self.responder.tunnel is None else 0


class HttpParserStop(Exception):
    """Raised from a parser callback to stop parsing a connection that is being closed."""


__all__ = ["ClientConnection", "Exchange", "HttpParserStop", "ProxyContext"]
