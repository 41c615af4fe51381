"""The answer side of a client connection: the worker's response on its way to the client,
the proxy's own answers (errors; built-in routes through ``balancer.local_answers``), and the
end of every exchange.

``Responder`` is one of the parts a ``balancer.protocol.ClientConnection`` is made of: the
``contracts.ResponseSink`` that ``balancer.upstream`` feeds (``response_head``,
``response_body``, ...), and what every path uses to end an exchange (``finish``, ``answer``,
``refuse``). It owns the client's socket for writing; it asks the request side
(``contracts.RequestSide``, ``balancer.forward``) for the next dispatch and for retries. Closing the
client after a refusal is a lingering close (nginx ``lingering_close``): the error is written,
the write side shut down, and what the client still sends is read and dropped for a bounded
time, so the client reads the error instead of a connection reset.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import fleet.balancer.head as heads
from fleet.balancer.context import ProxyContext
from fleet.balancer.exchange import DONE, Exchange, QUEUED, RELAYING, TUNNEL, UPGRADING
from fleet.balancer.contracts import RequestSide, WorkerLink
from fleet.balancer.flow import PEER_FULL, PIPELINE, UPGRADE, BUFFERED, ReadFlow
from fleet.balancer.head import CHUNKED, FAST_RESPONSE_HEAD, LAST_CHUNK, UNTIL_CLOSE, HeadError
from fleet.balancer.compressor import Encoder, compressed_answer
from fleet.balancer.local_answers import LocalAnswers

# The worker label of proxy answers that concern no worker (503 when none is ready).
NO_WORKER = "none"
# Lingering close: how long and how much the proxy keeps reading (and dropping) after it
# refused a request, so the refusal is read before the connection goes (nginx: 5 s).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

_METHOD_NAMES: dict[bytes, str] = {}


def method_name(method: bytes) -> str:
    name = _METHOD_NAMES.get(method)
    if name is None:
        name = method.decode("latin-1")
        if len(_METHOD_NAMES) < 64:
            _METHOD_NAMES[method] = name
    return name


class Responder:
    """The answer side of one client connection: the ``contracts.ResponseSink`` its worker
    connections feed, and every write to the client's socket."""

    __slots__ = ("client", "proxy", "queue", "flow", "transport", "requests", "closed", "lingering",
                 "linger_bytes", "tunnel", "tunnel_exchange", "write_paused", "idle_since", "_batch",
                 "local", "_deferred", "encoder")

    def __init__(self, client: ClientState, requests: RequestSide) -> None:
        self.client = client
        self.proxy: ProxyContext = client.proxy
        self.queue: deque[Exchange] = client.queue  # parsed requests; queue[0] is being answered
        self.flow: ReadFlow = client.flow
        self.transport: Any = None
        self.requests = requests
        self.closed = False
        self.lingering = 0.0  # when a lingering close began (0: not lingering)
        self.linger_bytes = 0
        self.tunnel: WorkerLink | None = None  # after a 101: the worker's end of the pipe
        self.tunnel_exchange: Exchange | None = None
        self.write_paused = False  # the client's socket is full
        self.idle_since = self.proxy.loop.time()  # when the last exchange ended
        self._batch: list[bytes] | None = None
        self.local = LocalAnswers(self)  # built-in routes and static files
        self._deferred: bytes | None = None  # a refusal, sent once earlier answers are out
        self.encoder: Encoder | None = None  # compresses the response being relayed (--compress)

    # -- writing to the client ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
        else:
            self.transport.write(data)

    def start_batch(self) -> None:
        """Writes collected while one read from a worker is parsed go out as one write."""
        if self._batch is None:
            self._batch = []

    def flush(self) -> None:
        encoder = self.encoder
        if encoder is not None and encoder.dirty:
            # One read from the worker is relayed: what the compressor holds goes out with it.
            self._relay(encoder.flush())
        batch = self._batch
        if batch is not None:
            self._batch = None
            if batch and not self.closed:
                self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    def tunnel_write(self, data: bytes) -> None:
        self.transport.write(data)

    def peer_full(self) -> None:
        self.flow.pause(PEER_FULL)

    def peer_ready(self) -> None:
        self.flow.resume(PEER_FULL)

    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self.tunnel or (self.queue[0].conn if self.queue else None)
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.local.waiting is not None:
            self.local.resume()
            return
        conn = self.tunnel or (self.queue[0].conn if self.queue else None)
        if conn is not None:
            conn.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def close_lingering(self) -> None:
        """Write what is owed, shut the write side, then read and drop input for a while."""
        if self.closed:
            return
        self.flush()
        transport = self.transport
        if self.tunnel is not None or not transport.can_write_eof():
            self.close()
            return
        self.closed = True
        self.client.dead = True
        self.lingering = self.proxy.loop.time()
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.flow.reasons = 0
        transport.resume_reading()

    # -- the worker's answer -----------------------------------------------------------------
    def interim_response(self, status: int, reason: bytes) -> None:
        queue = self.queue
        if queue and queue[0].request is not None and queue[0].request.http10:
            return  # HTTP/1.0 has no 1xx responses (RFC 9110 15.2)
        if not self.closed:
            self.write(b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason or b"Continue"))

    def response_head(self, conn: WorkerLink, exchange: Exchange, status: int, raw: bytes) -> None:
        """The worker's response head (``raw``: its status and header lines as llhttp accepted
        them) goes to the client, edited by ``head.response_head_raw``."""
        proxy = self.proxy
        request = exchange.request
        upstream = exchange.upstream
        assert request is not None and upstream is not None
        now = proxy.loop.time()
        if status == 101 and not request.websocket:
            conn.close()  # a worker switching protocols nobody asked for: not HTTP any more
            self.upstream_broken(exchange, "the worker switched protocols unasked")
            return
        method = request.method
        upstream.stats.record_response(_METHOD_NAMES.get(method) or method_name(method), status, now - exchange.started)
        keep_alive = request.keep_alive and not proxy.closing
        if request.websocket and status != 101:
            # Whatever the client sent after its Upgrade head was meant for a WebSocket: it
            # is dropped, never read as requests, and the connection ends after this answer.
            keep_alive = False
            client = self.client
            client.upgrading = None
            self.requests.release_held(exchange)
            client.dead = True
            self.flow.pause(PIPELINE)
        # The compiled path answers for a head seen before (None otherwise): same bytes.
        answer = None if FAST_RESPONSE_HEAD is None else FAST_RESPONSE_HEAD(
            raw, status, method == b"HEAD", request.http10, keep_alive, exchange.set_cookie, proxy.response_extra)
        if answer is None:
            answer = heads.response_head_raw(
                raw, status, method == b"HEAD", request.http10, keep_alive, exchange.set_cookie,
                proxy.response_extra)
        head, framing, conn.until_close = answer
        self.encoder = None
        if request.accept_encoding is not None and proxy.compress and status != 101:
            compressed = compressed_answer(raw, status, request, keep_alive, exchange.set_cookie, proxy.response_extra)
            if compressed is not None:
                head, framing, self.encoder = compressed
        exchange.framing = framing
        exchange.status = status
        if status != 101:
            exchange.move(RELAYING, now)
        if not keep_alive or framing == UNTIL_CLOSE:
            request.keep_alive = False
        proxy.stats.bytes_sent += len(head)
        if not self.closed:
            batch = self._batch  # self.write, inline: once per response
            if batch is not None:
                batch.append(head)
            else:
                self.transport.write(head)

    def response_body(self, body: bytes) -> None:
        if self.closed or not self.queue:
            return
        encoder = self.encoder
        if encoder is not None:
            self._relay(encoder.compress(body))
            return
        exchange = self.queue[0]
        data = heads.chunk(body) if exchange.framing == CHUNKED else body
        self.proxy.stats.bytes_sent += len(data)
        batch = self._batch  # self.write, inline: once per body piece
        if batch is not None:
            batch.append(data)
        else:
            self.transport.write(data)

    def _relay(self, data: bytes) -> None:
        """Compressed bytes of the response being relayed (never an empty chunk: it would end it)."""
        if data and not self.closed and self.queue:
            data = heads.chunk(data) if self.queue[0].framing == CHUNKED else data
            self.proxy.stats.bytes_sent += len(data)
            self.write(data)

    def response_complete(self, conn: WorkerLink, exchange: Exchange, reusable: bool) -> None:
        encoder = self.encoder
        if encoder is not None:
            self.encoder = None
            self._relay(encoder.finish())
        if exchange.framing == CHUNKED and not self.closed:
            self.write(LAST_CHUNK)
            self.proxy.stats.bytes_sent += len(LAST_CHUNK)
        exchange.conn = None
        conn.release(reusable and exchange.request_done)
        self.finish(exchange)

    def upgraded(self, conn: WorkerLink, exchange: Exchange, rest: bytes) -> None:
        """The worker answered 101: from now on this connection is a byte pipe to it."""
        self.uncount(exchange)
        if self.closed or exchange.state is not UPGRADING:
            conn.close()
            return
        exchange.move(TUNNEL, self.proxy.loop.time())
        exchange.conn = None
        self.queue.clear()
        self.client.upgrading = None
        conn.become_tunnel(self)
        self.tunnel = conn
        self.tunnel_exchange = exchange
        assert exchange.upstream is not None
        exchange.upstream.stats.websockets += 1
        if exchange.pending:
            conn.send_many(exchange.pending)
            self.requests.release_held(exchange)
        self.flow.resume(UPGRADE | BUFFERED | PIPELINE)
        if rest:
            self.proxy.stats.bytes_sent += len(rest)
            self.write(rest)
        if self.write_paused:
            conn.pause_reading()

    def end_tunnel(self) -> None:
        exchange = self.tunnel_exchange
        if exchange is not None:
            self.tunnel_exchange = None
            exchange.move(DONE, self.proxy.loop.time())
            upstream = exchange.upstream
            if upstream is not None:
                upstream.stats.websockets -= 1
                upstream.notify_if_idle()
        self.tunnel = None
        self.close()

    # -- ending an exchange ------------------------------------------------------------------
    def uncount(self, exchange: Exchange) -> None:
        if exchange.counted:
            exchange.counted = False
            upstream = exchange.upstream
            assert upstream is not None
            upstream.stats.active_requests -= 1
            if upstream.idle_waiters:
                upstream.notify_if_idle()
            waiting = self.proxy.waiting
            if waiting.size:
                waiting.wake()

    def abandon(self, exchanges: list[Exchange]) -> None:
        """Give up on these requests; a worker connection mid-exchange cannot be reused."""
        now = self.proxy.loop.time()
        requests = self.requests
        for exchange in exchanges:
            self.uncount(exchange)
            if exchange.state is QUEUED:
                requests.leave_queue(exchange)
            requests.release_held(exchange)
            if exchange.state is not DONE:
                exchange.move(DONE, now)
            conn = exchange.conn
            if conn is not None:
                exchange.conn = None
                conn.close()

    def finish(self, exchange: Exchange) -> None:
        self.uncount(exchange)
        if exchange.pending_size:
            self.requests.release_held(exchange)  # a body nobody read (a built-in route's)
        proxy = self.proxy
        if exchange.state is not DONE:
            # exchange.move(DONE), inline: every state but DONE may end (exchange.ENDS_ANYWHERE,
            # checked against the table at import), and DONE has no timeout: no clock read.
            exchange.state = DONE
        if proxy.access_log is not None:
            self._log(exchange)
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if self.closed:
            return
        request = exchange.request
        assert request is not None
        client = self.client
        if (self._deferred is not None or client.eof) and not queue:
            if self._deferred is not None:
                self.write(self._deferred)
            self.close_lingering()
            return
        if not request.keep_alive or not exchange.request_done or proxy.closing:
            self.close_lingering()
            return
        # A pause for that exchange's worker socket ends with it (the pooled connection no
        # longer reports to this client).
        if self.flow.reasons:
            self.flow.resume(PEER_FULL)
        if queue:
            if not client.dead:
                self.flow.resume(PIPELINE)
            self.requests.dispatch(queue[0])
            return
        self.idle_since = proxy.loop.time()

    def answer(self, exchange: Exchange, status: int, detail: str, extra: bytes = b"") -> None:
        """An answer from the proxy itself; the connection closes after it (what follows in it
        cannot be trusted to be framed the way the client meant)."""
        request = exchange.request
        assert request is not None
        exchange.status = status
        if exchange.state is QUEUED:
            self.requests.leave_queue(exchange)
        if status >= 500:
            # Counted like a worker's answer (nginx logs these with the upstream they concern),
            # so a 5xx-ratio alert sees "no worker ready" too; worker="none" when none was chosen.
            stats = exchange.upstream.stats if exchange.upstream is not None else self.proxy.stats.upstream(NO_WORKER)
            elapsed = self.proxy.loop.time() - exchange.started if exchange.started else 0.0
            stats.record_response(method_name(request.method), status, elapsed)
        if not self.closed:
            self.write(heads.error_response(status, detail, extra=extra, head_only=request.method == b"HEAD"))
        request.keep_alive = False
        self.finish(exchange)

    def refuse(self, rejection: HeadError, exchange: Exchange | None = None) -> None:
        """A request the proxy refuses (``ClientConnection.reject``): answers owed to requests
        pipelined ahead of it go out first; anything of the refused request (and after it) that
        already went to a worker is cut off there; then the connection closes."""
        queue = self.queue
        # Exchanges have no __eq__, so ``index`` finds this one by identity.
        position = queue.index(exchange) if exchange is not None and exchange in queue else len(queue)
        responded = exchange is not None and exchange.responded
        self.abandon([queue.pop() for _ in range(len(queue) - position)])
        if exchange is not None and exchange.state is not DONE:
            self.abandon([exchange])
        error = heads.error_response(rejection.status, rejection.detail)
        if queue:  # answers still owed to requests ahead of this one
            self._deferred = error
            self.flow.pause(PIPELINE)
            return
        if not responded:
            self.write(error)
        # else: this request's answer has begun; an error now would be mixed into it.
        self.close_lingering()

    def _log(self, exchange: Exchange) -> None:
        request = exchange.request
        if request is None:
            return
        upstream = exchange.upstream.id if exchange.upstream is not None else "-"
        elapsed = (self.proxy.loop.time() - exchange.started) * 1000 if exchange.started else 0.0
        assert self.proxy.access_log is not None
        self.proxy.access_log(
            f'{request.client.decode("latin-1")} "{method_name(request.method)} {request.path.decode("latin-1")}" '
            f'{exchange.status} {upstream} {elapsed:.1f}ms')

    # -- failures: the request side decides (retry or answer) ----------------------------------
    def upstream_lost(self, conn: WorkerLink, exchange: Exchange) -> None:
        self.requests.upstream_lost(conn, exchange)

    def upstream_broken(self, exchange: Exchange, detail: str) -> None:
        self.requests.upstream_broken(exchange, detail)


class ClientState(Protocol):
    """What the responder reads and sets of the connection it answers for
    (``protocol.ClientConnection``): the read side's flags."""

    proxy: ProxyContext
    queue: deque[Exchange]
    flow: ReadFlow
    dead: bool  # nothing more is read (a refusal, Connection: close)
    eof: bool  # the client half-closed: answer what it sent, then close
    upgrading: Exchange | None  # an Upgrade request waiting for its 101


__all__ = ["ClientState", "Responder", "LINGER_BYTES", "LINGER_SECONDS", "NO_WORKER", "method_name"]
