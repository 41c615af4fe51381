"""One HTTP/2 stream, served by the same machinery as an HTTP/1.1 connection.

Each stream gets an ``H2Stream``: a ``protocol.ClientConnection`` (so the parser, the head
rules, the forwarder, the responder and the sweep's timeouts are the HTTP/1.1 path's own, with
nothing of HTTP/2 in them) whose transport is a ``StreamTransport``. The stream's request comes
in as the HTTP/1.1 head ``balancer.h2request`` makes of its HEADERS, then its DATA; what the
responder writes (the worker's head as fleet edits it, the body, a proxy error) is read back by
a response parser and goes out as HEADERS and DATA frames on this stream. After a WebSocket's
101 (an RFC 8441 CONNECT), the stream answers 200 and carries the bytes both ways.

The stream's life is ``StreamState`` and its table: OPEN (no response yet) -> RESPONDING (the
head went out) or TUNNEL (the 200 of a WebSocket) -> ENDING (the end is queued behind unsent
bytes) -> CLOSED. Bounds: response bytes waiting for the client's window pause the worker past
``OUT_HIGH``; request bytes the stream did not take yet are at most its receive window.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from fleet.balancer.head import LAST_CHUNK, chunk
from fleet.balancer.h2limits import OUT_HIGH, OUT_LOW
from fleet.balancer.protocol import ClientConnection
from fleet.statetable import StateTable

if TYPE_CHECKING:
    from fleet.balancer.context import ProxyContext


class StreamState(enum.Enum):
    OPEN = "open"  # the request is being read; no response yet
    RESPONDING = "responding"  # the response head went out; its body streams
    TUNNEL = "tunnel"  # a WebSocket's 200 went out: bytes both ways
    ENDING = "ending"  # the response is complete; its end waits behind unsent bytes
    CLOSED = "closed"


OPEN, RESPONDING, TUNNEL, ENDING, CLOSED = StreamState
TABLE: StateTable[StreamState] = StateTable("h2 stream", {
    OPEN: {RESPONDING, TUNNEL, ENDING, CLOSED},
    RESPONDING: {ENDING, CLOSED},
    TUNNEL: {ENDING, CLOSED},
    ENDING: {CLOSED},
    CLOSED: (),
})
# Response fields HTTP/2 forbids (connection-specific) or that mean nothing on a stream.
_DROPPED = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_DROPPED_101 = _DROPPED | {b"sec-websocket-accept", b"content-length"}
# RST_STREAM codes (RFC 9113 7).
NO_ERROR, INTERNAL_ERROR, CANCEL = 0x0, 0x2, 0x8


class StreamOwner(Protocol):
    """What a stream asks of its connection (``h2conn.H2ClientConnection``)."""

    loop: asyncio.AbstractEventLoop
    transport: Any
    peer: str
    client_ip: bytes

    def send_head(self, stream: StreamTransport, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...

    def pump(self, stream: StreamTransport | None = None) -> None: ...

    def finish(self, stream: StreamTransport) -> None: ...

    def reset(self, stream: StreamTransport, code: int) -> None: ...

    def deliver_held(self, stream: StreamTransport) -> None: ...


class StreamTransport:
    """What an ``H2Stream`` writes to: HTTP/1.1 response bytes in, HTTP/2 frames out (through
    its connection, ``h2conn.H2ClientConnection``)."""

    __slots__ = ("owner", "stream_id", "protocol", "state", "head_request", "websocket", "chunked",
                 "parser", "out", "out_size", "reading", "held", "write_paused", "blocked_since",
                 "remote_ended", "tail", "_fields", "_head", "_ended", "_interim", "_length_known", "_skip")

    def __init__(self, owner: StreamOwner, stream_id: int, head_request: bool, websocket: bool,
                 chunked: bool) -> None:
        self.owner = owner
        self.stream_id = stream_id
        self.protocol: H2Stream | None = None
        self.state = OPEN
        self.head_request = head_request
        self.websocket = websocket
        self.chunked = chunked  # request DATA is framed as chunks for the parser
        self.parser = httptools.HttpResponseParser(self)
        self.out: list[bytes] = []  # DATA not yet sent (the client's window, the socket)
        self.out_size = 0
        self.reading = True
        self.held: list[tuple[bytes, int]] = []  # request bytes the stream paused for, and their window
        self.write_paused = False
        self.blocked_since = 0.0  # when bytes last waited for the window (0: none wait)
        self.remote_ended = False
        # The last request byte of a stream framed by its content-length, held until END_STREAM:
        # a body that ends short or runs long is refused by the HTTP/2 layer, and the worker
        # must not have seen a complete request by then.
        self.tail = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head: list[tuple[bytes, bytes]] | None = None  # a head not sent yet
        self._ended = False
        self._interim = False
        self._length_known = False  # the response has Content-Length or chunked framing
        self._skip = False  # the response is over (HEAD): nothing more is parsed

    def move(self, target: StreamState) -> None:
        self.state = TABLE.move(self.state, target)

    # -- what the stream's ClientConnection calls (an asyncio transport's subset) -----------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.owner.transport.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the stream's own bounds: OUT_HIGH, OUT_LOW

    def is_closing(self) -> bool:
        return self.state is ENDING or self.state is CLOSED

    def can_write_eof(self) -> bool:
        return False  # a lingering close means nothing on a stream: close() ends it

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.owner.deliver_held(self)

    def write(self, data: bytes) -> None:
        state = self.state
        if state is TUNNEL:
            self.queue(data)
            self.owner.pump(self)
            return
        if state is not OPEN and state is not RESPONDING or self._skip:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0]:]
            if self.state is TUNNEL and rest:
                self.queue(rest)
        except httptools.HttpParserError:
            self.reset(INTERNAL_ERROR)  # fleet wrote something that is not HTTP: a bug, not the client's
            return
        self._flush()

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def close(self) -> None:
        """The responder is done with the stream: a complete response ends it cleanly; a tunnel
        or a response that ends with its connection ends too; anything cut short is reset."""
        state = self.state
        if state is ENDING or state is CLOSED:
            return
        if state is TUNNEL or (state is RESPONDING and not self._length_known):
            self._end()
        else:
            self.reset(INTERNAL_ERROR if state is RESPONDING else CANCEL)

    def abort(self) -> None:
        if self.state is not CLOSED:
            self.reset(CANCEL)

    # -- the response parser's callbacks --------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        fields, self._fields = self._fields, []
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue and the like: not needed on a stream
            return
        if status == 101:
            # The worker took the WebSocket: the stream's answer is 200 (RFC 8441 5).
            self._head = [(b":status", b"200")] + [(n, v) for n, v in fields if n not in _DROPPED_101]
            self.move(TUNNEL)
            return
        self._length_known = any(n == b"content-length" or n == b"transfer-encoding" for n, _ in fields)
        self._head = [(b":status", b"%d" % status)] + [(n, v) for n, v in fields if n not in _DROPPED]
        self.move(RESPONDING)
        if self.head_request:
            self._ended = True
            self._skip = True

    def on_body(self, body: bytes) -> None:
        self.queue(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self.state is RESPONDING:
            self._ended = True
            self._skip = True

    # -- frames out ----------------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        if data:
            self.out.append(data)
            self.out_size += len(data)
            if self.out_size > OUT_HIGH and not self.write_paused and self.protocol is not None:
                self.write_paused = True
                self.protocol.pause_writing()

    def sent(self, size: int, now: float) -> None:
        """``size`` bytes of ``out`` went out as DATA (the connection's pump)."""
        self.out_size -= size
        self.blocked_since = 0.0  # progress
        if self.write_paused and self.out_size < OUT_LOW and self.protocol is not None:
            self.write_paused = False
            self.protocol.resume_writing()

    def _flush(self) -> None:
        head = self._head
        owner = self.owner
        if head is not None:
            self._head = None
            only_head = self._ended and not self.out
            owner.send_head(self, head, only_head)
            if only_head:
                self.move(ENDING)
                owner.finish(self)
                return
        if self._ended:
            self.move(ENDING)
        owner.pump(self)

    def _end(self) -> None:
        """END_STREAM after the bytes still queued (the pump sends it once ``out`` is empty)."""
        if self._head is not None:
            self._flush()
            if self.state is CLOSED or self.state is ENDING:
                return
        self.move(ENDING)
        self.owner.pump(self)

    def reset(self, code: int) -> None:
        if self.state is not CLOSED:
            self.owner.reset(self, code)

    def closed(self) -> None:
        """The stream is gone (ended, reset either way): its ClientConnection ends too."""
        if self.state is not CLOSED:
            self.move(CLOSED)
        self.out = []
        self.out_size = 0
        self.held = []
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            # Soon, not now: this can run inside the responder's own write.
            self.owner.loop.call_soon(protocol.connection_lost, None)

    # -- request bytes in ----------------------------------------------------------------------
    def framed(self, data: bytes, end: bool) -> bytes:
        """A DATA frame's bytes as the stream's HTTP/1.1 parser expects them (``end``: the
        stream ended; a held last byte goes with it)."""
        if not self.chunked:
            if self.websocket:
                return data
            data = self.tail + data
            self.tail = b"" if end else data[-1:]
            return data if end else data[:-1]
        framed = chunk(data) if data else b""
        return framed + LAST_CHUNK if end else framed


class H2Stream(ClientConnection):
    """A ``ClientConnection`` for one stream: the connection's address, counted once by the
    HTTP/2 connection (not per stream, in ``--max-connections`` or the per-IP limit)."""

    __slots__ = ()

    def __init__(self, proxy: ProxyContext, transport: StreamTransport) -> None:
        super().__init__(proxy)
        transport.protocol = self
        self.connection_made(transport)

    def connection_made(self, transport: Any) -> None:
        self.transport = self.responder.transport = transport
        self.flow.transport = transport
        owner = transport.owner
        self.peer = owner.peer
        self.client_ip = owner.client_ip
        trust = self.proxy.trust
        if trust.any and trust.is_trusted(self.client_ip):
            self._fast_head = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.responder.closed = True
        self.end_exchanges()


__all__ = ["CANCEL", "H2Stream", "INTERNAL_ERROR", "NO_ERROR", "StreamOwner", "StreamState", "StreamTransport", "TABLE"]
