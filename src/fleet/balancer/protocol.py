"""The client side of the proxy: what happens to a byte from a browser.

``ClientConnection`` is an ``asyncio.Protocol`` that feeds ``httptools`` and turns each request
into an ``Exchange``: head checked and rewritten by ``balancer.head``, a worker chosen by
``balancer.policy``, an idle pooled ``UpstreamConnection`` attached (or a new one opened), the
body streamed through as it arrives, and the response streamed back. Requests pipelined on one
connection queue behind each other and are answered in order.

Flow control is symmetric and bounded: when the socket we write to is full its protocol pauses
reading on the other side (``pause_writing``/``resume_writing``), and request bytes that wait
for a worker are capped (``PENDING_LIMIT``) before the client is paused. So a slow reader
never makes the proxy hold more than a few hundred KiB per connection.

Timeouts are not timers per request: the balancer sweeps its connections once a second
(``sweep``), which costs nothing on the hot path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import httptools

from fleet.balancer import head as heads
from fleet.balancer.allow import Allowlist
from fleet.balancer.head import CHUNKED, IDEMPOTENT, LAST_CHUNK, LENGTH, UNTIL_CLOSE, HeadError, Request
from fleet.balancer.policy import Upstream, UpstreamSet, affinity_from_cookie
from fleet.balancer.stats import ProxyStats
from fleet.balancer.trust import TrustedProxies
from fleet.balancer.upstream import WRITE_HIGH_WATER, UpstreamConnection

if TYPE_CHECKING:
    from fleet.config import Config

# Request bytes held for a worker not yet connected (or behind a pipelined request) before
# the client is paused.
PENDING_LIMIT = 256 * 1024
# Pipelined requests parsed ahead of the one being answered before the client is paused.
PIPELINE_LIMIT = 64
# Reasons reading from a client is paused (bit flags).
PAUSE_PENDING = 1
PAUSE_UPSTREAM = 2
PAUSE_PIPELINE = 4
CONNECT_TIMEOUT = 5.0
# The worker label of proxy answers that concern no worker (503 when none is ready).
NO_WORKER = "none"

_METHOD_NAMES: dict[bytes, str] = {}


def _method_name(method: bytes) -> str:
    name = _METHOD_NAMES.get(method)
    if name is None:
        name = method.decode("latin-1")
        if len(_METHOD_NAMES) < 64:
            _METHOD_NAMES[method] = name
    return name


class ProxyContext:
    """What every connection of one balancer shares: settings, upstreams, counters, routes."""

    def __init__(self, config: "Config", stats: ProxyStats, upstreams: UpstreamSet,
                 access_log: Callable[[str], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.upstreams = upstreams
        self.clients: set[ClientConnection] = set()
        self.local_routes: dict[bytes, Callable[[], tuple[int, str, bytes]]] = {}
        self.closing = False
        self.max_header_size = config.max_header_size
        self.max_body_size = config.max_body_size
        self.upstream_timeout = config.upstream_timeout
        self.client_timeout = config.client_timeout
        self.header_timeout = config.header_timeout
        self.sticky = config.sticky
        self.trust = TrustedProxies(config.trusted_proxies())
        self.scheme = b"https" if config.ssl_certfile else b"http"
        self.default_host = f"{config.address}:{config.port}".encode()
        self.allowed_hosts = Allowlist(config.allow_host)
        self.allowed_origins = Allowlist(config.allow_websocket_origin)
        # Strict-Transport-Security on every worker response over TLS (--hsts).
        self.response_extra = (b"Strict-Transport-Security: max-age=%d" % config.hsts
                               if config.hsts and config.ssl_certfile else None)
        self.access_log = access_log

    def host_allowed(self, host: bytes) -> bool:
        return not self.allowed_hosts or self.allowed_hosts.allows_host_header(host)

    def origin_allowed(self, origin: bytes | None) -> bool:
        return not self.allowed_origins or origin is None or self.allowed_origins.allows_origin(origin)


class Exchange:
    """One request on a client connection and the response to it."""

    __slots__ = ("request", "upstream", "conn", "pending", "pending_size", "request_done",
                 "body_received", "tried", "started", "sent_at", "responded", "framing",
                 "set_cookie", "status", "counted", "finished", "retries")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.upstream: Upstream | None = None
        self.conn: UpstreamConnection | None = None
        self.pending: list[bytes] = []  # body bytes (already framed for the worker) not yet sent
        self.pending_size = 0
        self.request_done = False  # the whole request has been read from the client
        self.body_received = 0
        self.tried: list[Upstream] = []  # workers that failed this request (connect errors)
        self.started = 0.0
        self.sent_at = 0.0
        self.responded = False  # a response head has gone to the client
        self.framing = LENGTH
        self.set_cookie: bytes | None = None
        self.status = 0
        self.counted = False  # counted in its upstream's active_requests
        self.finished = False
        self.retries = 0


class ClientConnection(asyncio.Protocol):
    def __init__(self, proxy: ProxyContext) -> None:
        self.proxy = proxy
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()  # parsed requests; queue[0] is being answered
        self.parsing: Exchange | None = None  # the request whose body is being read
        self.tunnel: UpstreamConnection | None = None
        self.client_ip = b"unix"
        self.closed = False
        self.in_head = True  # waiting for (the rest of) a request head
        self.head_started = proxy.loop.time()
        self.idle_since = self.head_started
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._raw_head = 0
        self._rejection: HeadError | None = None
        self._paused = 0
        self._write_paused = False
        self._upgrading: Exchange | None = None
        self._tunnel_upstream: Upstream | None = None  # whose websocket gauge this tunnel counts in
        # Writes to the client collected while one read from a worker is parsed, sent as one
        # write: a small response's head and body then cost one send() instead of two.
        self._batch: list[bytes] | None = None
        self._reads = 0  # data_received calls, for the sweep's stalled-body check
        self._reads_seen = 0
        self._progress_at = self.head_started
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._dead = False  # a request was refused: nothing more is read
        self._deferred: bytes | None = None  # that refusal, sent once earlier answers are out

    # -- connection lifecycle ----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0]).encode()
        self.proxy.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.clients.discard(self)
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.tunnel = None
            tunnel.close()
            self.end_tunnel()
        self._abandon(list(self.queue))
        self.queue.clear()

    def _abandon(self, exchanges: list[Exchange]) -> None:
        """Give up on these requests; a worker connection mid-exchange cannot be reused."""
        for exchange in exchanges:
            self._uncount(exchange)
            exchange.finished = True
            conn = exchange.conn
            if conn is not None:
                exchange.conn = None
                conn.close()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def _write(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
        else:
            self.transport.write(data)

    def start_batch(self) -> None:
        if self._batch is None:
            self._batch = []

    def flush(self) -> None:
        batch = self._batch
        if batch is not None:
            self._batch = None
            if batch and not self.closed:
                self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    def pause_writing(self) -> None:
        self._write_paused = True
        conn = self.tunnel or (self.queue[0].conn if self.queue else None)
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        conn = self.tunnel or (self.queue[0].conn if self.queue else None)
        if conn is not None:
            conn.resume_reading()

    def _pause(self, reason: int) -> None:
        if not self._paused and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closed:
                self.transport.resume_reading()

    def pause_reading_for_upstream(self, pause: bool) -> None:
        if pause:
            self._pause(PAUSE_UPSTREAM)
        else:
            self._resume(PAUSE_UPSTREAM)

    # -- bytes from the client ---------------------------------------------------------------
    def eof_received(self) -> bool | None:
        if self.tunnel is None and self.queue and not self.closed:
            self._eof = True  # a half-close ends the requests, not the answers still owed
            return True
        return None

    def data_received(self, data: bytes) -> None:
        proxy = self.proxy
        proxy.stats.bytes_received += len(data)
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        self._reads += 1
        upgrading = self._upgrading
        if upgrading is not None:
            # Bytes after an Upgrade head, before the worker's 101: they belong to the tunnel.
            self._hold(upgrading, data)
            return
        if self._dead:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange = self._upgrading
            rest = data[upgrade.args[0]:]
            if exchange is None:
                # An upgrade other than WebSocket went through as a plain request; the parser
                # cannot read past it, so nothing more is read from this connection.
                self._pause(PAUSE_PIPELINE)
            elif rest:
                self._hold(exchange, rest)
            return
        except httptools.HttpParserCallbackError:
            rejection = self._rejection
            if rejection is not None:
                self._reject(rejection)
            elif not (self.closed or self._dead):
                raise
            return
        except httptools.HttpParserError as exc:
            if not self._dead:
                self._reject(HeadError(400, "malformed", f"malformed request ({exc})"), self.parsing)
            return
        if self.in_head and self.parsing is None:
            self._raw_head += len(data)
            if self._raw_head > proxy.max_header_size * 2 + 16384:
                self._reject(HeadError(431, "head_too_large", "request head too large"))

    def _hold(self, exchange: Exchange, data: bytes) -> None:
        """Request bytes for the worker: sent now, or kept (bounded) until it is connected."""
        conn = exchange.conn
        if conn is not None and exchange.sent_at:
            conn.transport.write(data)
        else:
            exchange.pending.append(data)
            exchange.pending_size += len(data)
            if exchange.pending_size > PENDING_LIMIT:
                self._pause(PAUSE_PENDING)

    # httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_started = self.proxy.loop.time()
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._raw_head = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._grow_head(len(name) + len(value) + 4)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.proxy.max_header_size:
            self._rejection = HeadError(431, "head_too_large", "request head too large")
            raise self._rejection

    def on_headers_complete(self) -> None:
        proxy = self.proxy
        parser = self.parser
        self.in_head = False
        version = parser.get_http_version()
        upgrade = parser.should_upgrade()
        try:
            if version != "1.1" and version != "1.0":
                raise HeadError(400, "bad_version", "only HTTP/1.0 and HTTP/1.1 are supported")
            request = heads.forward_request(
                parser.get_method(), self._url, version == "1.0", parser.should_keep_alive(), upgrade,
                self._headers, self.client_ip, proxy.scheme, proxy.trust, proxy.default_host)
            if proxy.allowed_hosts and not proxy.host_allowed(request.host or b""):
                raise HeadError(421, "bad_host", "Host not allowed")
            if request.content_length is not None and request.content_length > proxy.max_body_size:
                raise HeadError(413, "body_too_large", "request body too large")
            if request.websocket and not proxy.origin_allowed(request.origin):
                raise HeadError(403, "bad_origin", "Origin not allowed")
        except HeadError as rejection:
            self._rejection = rejection
            raise
        self._url = b""
        self._headers = []
        exchange = Exchange(request)
        self.parsing = exchange
        queue = self.queue
        queue.append(exchange)
        if request.websocket:
            self._upgrading = exchange
        elif upgrade:
            request.keep_alive = False
        if len(queue) == 1:
            self._dispatch(exchange)
        elif len(queue) > PIPELINE_LIMIT:
            self._pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.finished:
            return
        exchange.body_received += len(body)
        if exchange.body_received > self.proxy.max_body_size:
            self._reject(HeadError(413, "body_too_large", "request body too large"), exchange)
            raise HttpParserStop()
        self._hold(exchange, heads.chunk(body) if exchange.request.chunked else body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        self.in_head = False
        if exchange is None or exchange.finished:
            return
        exchange.request_done = True
        if exchange.sent_at:
            exchange.sent_at = self.proxy.loop.time()  # --upstream-timeout runs from the last byte
        if exchange.request.chunked:
            conn = exchange.conn
            if conn is not None and exchange.sent_at:
                conn.transport.write(LAST_CHUNK)
            else:
                exchange.pending.append(LAST_CHUNK)
        if not exchange.request.keep_alive:
            # RFC 9112 9.6: nothing after a Connection: close request is processed (llhttp
            # would report the bytes as an error, which must not become an answer).
            self._dead = True
            self._pause(PAUSE_PIPELINE)

    # -- choosing a worker and sending the request -------------------------------------------
    def _dispatch(self, exchange: Exchange) -> None:
        proxy = self.proxy
        request = exchange.request
        routes = proxy.local_routes
        if routes and request.path in routes and not request.websocket:
            self._serve_local(exchange, routes[request.path])
            return
        now = proxy.loop.time()
        affinity = None
        if proxy.sticky and request.affinity_cookie is not None:
            affinity = affinity_from_cookie(request.affinity_cookie)
        upstream = proxy.upstreams.choose(now, affinity, exchange.tried)
        if upstream is None:
            detail = "no worker is ready" if not exchange.tried else "no worker could be reached"
            self._answer(exchange, 503, detail, extra=b"Retry-After: 1\r\n")
            return
        if not exchange.started:
            exchange.started = now
        exchange.upstream = upstream
        exchange.set_cookie = upstream.cookie if proxy.sticky and affinity != upstream.id else None
        upstream.stats.active_requests += 1
        exchange.counted = True
        idle = upstream.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.attach(self, exchange)
                exchange.conn = conn
                self._send(exchange)
                return
        proxy.loop.create_task(self._connect(exchange, upstream))

    async def _connect(self, exchange: Exchange, upstream: Upstream) -> None:
        proxy = self.proxy
        try:
            _, conn = await asyncio.wait_for(
                proxy.loop.create_connection(lambda: UpstreamConnection(proxy, upstream),
                                             upstream.host, upstream.port),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            upstream.stats.connect_errors += 1
            proxy.upstreams.mark_down(upstream, proxy.loop.time())
            self._uncount(exchange)
            if exchange.finished or self.closed:
                return
            # Nothing reached the worker, so any method is safe to send elsewhere.
            exchange.tried.append(upstream)
            exchange.upstream = None
            proxy.stats.retries += 1
            self._dispatch(exchange)
            return
        if exchange.finished or self.closed:
            conn.release(reusable=True)
            return
        conn.attach(self, exchange)
        exchange.conn = conn
        self._send(exchange)

    def _send(self, exchange: Exchange) -> None:
        conn = exchange.conn
        assert conn is not None
        if exchange.pending:
            conn.transport.writelines([exchange.request.forward, *exchange.pending])
            exchange.pending = []
            exchange.pending_size = 0
            self._resume(PAUSE_PENDING)
        else:
            conn.transport.write(exchange.request.forward)
        exchange.sent_at = self.proxy.loop.time()
        if self._write_paused:
            conn.pause_reading()

    # -- the worker's answer -----------------------------------------------------------------
    def interim_response(self, status: int, reason: bytes) -> None:
        if self.queue and self.queue[0].request.http10:
            return  # HTTP/1.0 has no 1xx responses (RFC 9110 15.2)
        if not self.closed:
            self._write(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason or b"Continue"))

    def response_head(self, conn: UpstreamConnection, exchange: Exchange, status: int,
                      reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        proxy = self.proxy
        request = exchange.request
        upstream = exchange.upstream
        assert upstream is not None
        upstream.stats.record_response(_method_name(request.method), status,
                                       proxy.loop.time() - exchange.started)
        keep_alive = request.keep_alive and not proxy.closing and (request.websocket or status != 101)
        if request.websocket and status != 101:
            keep_alive = False  # the client may already send frames after its Upgrade head
        head, framing, conn.until_close = heads.response_head(
            status, reason, headers, head_request=request.method == b"HEAD",
            http10_client=request.http10, keep_alive=keep_alive, set_cookie=exchange.set_cookie,
            extra=proxy.response_extra)
        exchange.framing = framing
        exchange.status = status
        exchange.responded = True
        if not keep_alive or framing == UNTIL_CLOSE:
            request.keep_alive = False
        proxy.stats.bytes_sent += len(head)
        if not self.closed:
            self._write(head)

    def response_body(self, body: bytes) -> None:
        if self.closed or not self.queue:
            return
        exchange = self.queue[0]
        data = heads.chunk(body) if exchange.framing == CHUNKED else body
        self.proxy.stats.bytes_sent += len(data)
        self._write(data)

    def response_complete(self, conn: UpstreamConnection, exchange: Exchange, reusable: bool) -> None:
        if exchange.framing == CHUNKED and not self.closed:
            self._write(LAST_CHUNK)
            self.proxy.stats.bytes_sent += len(LAST_CHUNK)
        exchange.conn = None
        conn.release(reusable and exchange.request_done)
        self._finish(exchange)

    def upgraded(self, conn: UpstreamConnection, exchange: Exchange, rest: bytes) -> None:
        """The worker answered 101: from now on this connection is a byte pipe to it."""
        self._uncount(exchange)
        if self.closed:
            conn.close()
            return
        exchange.finished = True
        exchange.conn = None
        self.queue.clear()
        self._upgrading = None
        conn.client = None
        conn.exchange = None
        conn.tunnel = self
        self.tunnel = conn
        assert exchange.upstream is not None
        exchange.upstream.stats.websockets += 1
        self._tunnel_upstream = exchange.upstream
        self._resume(PAUSE_PENDING | PAUSE_PIPELINE)
        if rest:
            self.proxy.stats.bytes_sent += len(rest)
            self._write(rest)
        if self._write_paused:
            conn.pause_reading()

    def end_tunnel(self) -> None:
        if self._tunnel_upstream is not None:
            self._tunnel_upstream.stats.websockets -= 1
            self._tunnel_upstream = None
        self.tunnel = None
        self.close()

    def upstream_lost(self, conn: UpstreamConnection, exchange: Exchange) -> None:
        """The worker's connection closed before its response was complete."""
        exchange.conn = None
        self._uncount(exchange)
        if exchange.finished or self.closed:
            return
        if exchange.responded:
            self.close()  # mid-response: a truncated body must not look complete
            return
        request = exchange.request
        upstream = exchange.upstream
        # Retry when the worker cannot have acted on it (it never answered) and the request
        # can be sent again: idempotent, its body fully read and empty.
        if (not conn.got_bytes and request.method in IDEMPOTENT and exchange.request_done
                and not request.chunked and not request.content_length and upstream is not None
                and exchange.retries <= len(self.proxy.upstreams)):
            exchange.retries += 1
            if not conn.reused:
                exchange.tried.append(upstream)
            self.proxy.stats.retries += 1
            exchange.upstream = None
            exchange.sent_at = 0.0
            self._dispatch(exchange)
            return
        self._answer(exchange, 502, "the worker closed the connection")

    def upstream_broken(self, exchange: Exchange, detail: str) -> None:
        exchange.conn = None
        self._uncount(exchange)
        if exchange.finished or self.closed:
            return
        if exchange.responded:
            self.close()
        else:
            self._answer(exchange, 502, detail)

    def upstream_timed_out(self, exchange: Exchange) -> None:
        conn = exchange.conn
        exchange.conn = None
        if conn is not None:
            conn.close()
        self._uncount(exchange)
        self._answer(exchange, 504, "the worker did not answer in time")

    # -- ending an exchange ------------------------------------------------------------------
    def _uncount(self, exchange: Exchange) -> None:
        if exchange.counted:
            exchange.counted = False
            assert exchange.upstream is not None
            exchange.upstream.stats.active_requests -= 1

    def _finish(self, exchange: Exchange) -> None:
        self._uncount(exchange)
        exchange.finished = True
        proxy = self.proxy
        if proxy.access_log is not None:
            self._log(exchange)
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if self.closed:
            return
        if (self._deferred is not None or self._eof) and not queue:
            if self._deferred is not None:
                self._write(self._deferred)
            self.close()
            return
        if not exchange.request.keep_alive or not exchange.request_done or proxy.closing:
            self.close()
            return
        # A pause for that exchange's worker socket ends with it (the pooled connection no
        # longer reports to this client).
        self._resume(PAUSE_UPSTREAM)
        if queue:
            if len(queue) <= PIPELINE_LIMIT:
                self._resume(PAUSE_PIPELINE)
            self._dispatch(queue[0])
            return
        self.idle_since = proxy.loop.time()
        if self.parsing is None and not self._raw_head:
            self.in_head = False

    def _answer(self, exchange: Exchange, status: int, detail: str, extra: bytes = b"") -> None:
        """An answer from the proxy itself; the connection closes after it (what follows in it
        cannot be trusted to be framed the way the client meant)."""
        exchange.status = status
        if status >= 500:
            # Counted like a worker's answer (nginx logs these with the upstream they concern),
            # so a 5xx-ratio alert sees "no worker ready" too; worker="none" when none was chosen.
            stats = exchange.upstream.stats if exchange.upstream is not None else self.proxy.stats.upstream(NO_WORKER)
            elapsed = self.proxy.loop.time() - exchange.started if exchange.started else 0.0
            stats.record_response(_method_name(exchange.request.method), status, elapsed)
        if not self.closed:
            self._write(heads.error_response(status, detail, extra=extra,
                                             head_only=exchange.request.method == b"HEAD"))
        exchange.request.keep_alive = False
        exchange.responded = True
        self._finish(exchange)

    def _serve_local(self, exchange: Exchange, handler: Callable[[], tuple[int, str, bytes]]) -> None:
        request = exchange.request
        if request.method not in (b"GET", b"HEAD"):
            self._answer(exchange, 405, "only GET and HEAD", extra=b"Allow: GET, HEAD\r\n")
            return
        status, content_type, body = handler()
        close = not request.keep_alive or self.proxy.closing
        response = heads.local_response(status, content_type, body, close=close, http10=request.http10,
                                        head_only=request.method == b"HEAD")
        exchange.status = status
        exchange.responded = True
        self.proxy.stats.bytes_sent += len(response)
        self._write(response)
        self._finish(exchange)

    def _reject(self, rejection: HeadError, exchange: Exchange | None = None) -> None:
        """A request the proxy refuses: its status (counted by reason), then the connection
        closes. Answers owed to requests pipelined ahead of it go out first; anything of the
        refused request (and after it) that already went to a worker is cut off there."""
        self._rejection = None
        self.proxy.stats.client_error(rejection.reason)
        if self.closed:
            return
        queue = self.queue
        # Exchanges have no __eq__, so ``index`` finds this one by identity.
        position = queue.index(exchange) if exchange is not None and exchange in queue else len(queue)
        self._abandon([queue.pop() for _ in range(len(queue) - position)])
        self.parsing = None
        self._dead = True
        error = heads.error_response(rejection.status, rejection.detail)
        if queue:  # answers still owed to requests ahead of this one
            self._deferred = error
            self._pause(PAUSE_PIPELINE)
            return
        if exchange is None or not exchange.responded:
            self._write(error)
        # else: this request's answer has begun; an error now would be mixed into it.
        self.close()

    def _log(self, exchange: Exchange) -> None:
        request = exchange.request
        upstream = exchange.upstream.id if exchange.upstream is not None else "-"
        elapsed = (self.proxy.loop.time() - exchange.started) * 1000 if exchange.started else 0.0
        assert self.proxy.access_log is not None
        self.proxy.access_log(
            f'{request.client.decode()} "{_method_name(request.method)} {request.path.decode("latin-1")}" '
            f'{exchange.status} {upstream} {elapsed:.1f}ms')

    # -- timeouts, from the balancer's sweep -------------------------------------------------
    def sweep(self, now: float) -> None:
        proxy = self.proxy
        if self.tunnel is not None or self.closed:
            return
        if self._reads != self._reads_seen:
            self._reads_seen = self._reads
            self._progress_at = now
        parsing = self.parsing
        if parsing is not None and not self._dead and now - self._progress_at > proxy.client_timeout:
            # The client stopped in the middle of its body: its fault, not the worker's.
            self._reject(HeadError(408, "body_timeout", "request body not received in time"), parsing)
            return
        queue = self.queue
        if queue:
            exchange = queue[0]
            if (exchange.conn is not None and exchange.sent_at and exchange.request_done
                    and not exchange.responded and now - exchange.sent_at > proxy.upstream_timeout):
                self.upstream_timed_out(exchange)
        elif self.in_head:
            if now - self.head_started > proxy.header_timeout:
                proxy.stats.client_error("header_timeout")
                self.transport.abort()
        elif now - self.idle_since > proxy.client_timeout:
            self.close()

    def close_if_idle(self) -> None:
        """For a graceful stop: close a keep-alive connection that is between requests."""
        if not self.queue and self.tunnel is None and self.parsing is None and not self._raw_head:
            self.close()


class HttpParserStop(Exception):
    """Raised from a parser callback to stop parsing a connection that is being closed."""


__all__ = ["ClientConnection", "Exchange", "ProxyContext", "HttpParserStop"]
