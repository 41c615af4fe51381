"""An HTTP/2 client connection (ALPN ``h2``): frames in and out through the ``h2`` library, one
``h2stream.H2Stream`` per request stream, and the limits of ``balancer.h2limits``.

Why the h2 library (python-hyper) and not framing by hand: HPACK, the frame and stream state
machines and flow-control accounting are where HTTP/2 servers have had their bugs; h2 is small,
pure Python, well kept, and already bounds header blocks (``CONTINUATION_BACKLOG``) and decoded
header lists. What it leaves to its user, and this module does: limits per window (resets,
control frames), stream refusal, timeouts, and when to read and write.

``balancer.alpnswitch`` hands a TLS connection that chose ``h2`` to an ``H2ClientConnection``.

The connection, not each stream, is one of ``ProxyContext.clients``: it counts once against
``--max-connections`` and the per-IP limit, and the balancer's sweep reaches its streams
through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from fleet.balancer.context import ProxyContext
from fleet.balancer.head import HeadError, error_response
from fleet.balancer.h2limits import CONNECTION_WINDOW, STREAM_WINDOW, H2Limits, RateWindow, error_reason
from fleet.balancer.h2request import translate
from fleet.balancer.h2stream import CANCEL, ENDING, INTERNAL_ERROR, NO_ERROR, H2Stream, StreamTransport
from fleet.balancer.response import LINGER_SECONDS
from fleet.balancer.upstream import WRITE_HIGH_WATER

REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x7, 0xB
# Inbound fields are validated by h2 (names, pseudo-headers, connection-specific fields) and
# again by fleet's rules. Outbound ones are a worker's head as llhttp accepted it (no CR, LF or
# NUL), lowercased and without connection-specific fields by ``h2stream``: h2's second pass
# over them would only cost time on every response.
_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
_S = h2.settings.SettingCodes


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection from a client and its streams (a ``contracts.ProxyClient``)."""

    tunnel = None  # a stream's WebSocket is the stream's; the connection is never one

    def __init__(self, proxy: ProxyContext) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.transport: Any = None
        self.peer = "unix"
        self.client_ip = b"unix"
        self.limits = H2Limits.for_headers(proxy.max_header_size, proxy.max_header_count)
        self.conn = h2.connection.H2Connection(_CONFIG)
        self.streams: dict[int, StreamTransport] = {}
        self.waiting: dict[int, StreamTransport] = {}  # streams with bytes or an end to send
        self.socket_full = False
        self.closed = False
        self.closed_at = 0.0
        self.draining = False  # GOAWAY sent: no new stream; closed once the last one ends
        self.opened = 0
        self.resets = RateWindow(self.limits.window, self.limits.max_resets)
        self.control = RateWindow(self.limits.window, self.limits.max_control)
        self.idle_since = self.loop.time()
        self._counted_ip: str | None = None
        self._send_pending = False

    # -- connection lifecycle ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        proxy = self.proxy
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
            self.client_ip = self.peer.encode()
        proxy.clients.add(self)
        cap = proxy.max_connections_per_ip
        if cap and not proxy.exempt_from_ip_limits(self.peer):
            count = proxy.per_ip.get(self.peer, 0)
            if count >= cap:
                proxy.stats.client_error("too_many_connections_per_ip")
                self.closed = True
                transport.abort()
                return
            proxy.per_ip[self.peer] = count + 1
            self._counted_ip = self.peer
        conn = self.conn
        limits = self.limits
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            _S.MAX_CONCURRENT_STREAMS: limits.max_streams,
            _S.MAX_HEADER_LIST_SIZE: limits.header_list_size,
            _S.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            _S.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSockets over this connection
        })
        conn.decoder.max_header_list_size = limits.header_list_size
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_streams()
        self.closed = True
        counted, self._counted_ip = self._counted_ip, None
        self.proxy.client_gone(self, counted)

    def _end_streams(self) -> None:
        streams, self.streams = self.streams, {}
        self.waiting = {}
        for stream in streams.values():
            stream.closed()

    def pause_writing(self) -> None:
        self.socket_full = True

    def resume_writing(self) -> None:
        self.socket_full = False
        self.pump()

    def _send_soon(self) -> None:
        """One write for what every stream queued in this turn of the loop: responses of
        several streams that arrive together go out in one TLS record and one syscall."""
        if not self._send_pending:
            self._send_pending = True
            self.loop.call_soon(self._send_now)

    def _send_now(self) -> None:
        self._send_pending = False
        self._send()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.proxy.stats.bytes_sent += len(data)
            self.transport.write(data)

    # -- frames in -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        proxy = self.proxy
        proxy.stats.bytes_received += len(data)
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # The library has queued its GOAWAY (PROTOCOL_ERROR, ENHANCE_YOUR_CALM for a header
            # list past its bound, ...): it goes out, then the connection closes.
            proxy.stats.client_error(error_reason(exc))
            self._send()
            self._shut()
            return
        now = self.loop.time()
        for event in events:
            self._event(event, now)
            if self.closed:
                return
        self._send()

    def _event(self, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            size = event.flow_controlled_length
            if not event.data and event.stream_ended is None and self.control.add(now):
                self._calm("h2_control_flood")
            elif stream is None:
                self._ack(event.stream_id, size)  # a stream already answered: dropped
            else:
                self.deliver(stream, stream.framed(event.data, False), size)
        elif isinstance(event, h2.events.RequestReceived):
            self._open(event.stream_id, event.headers, event.stream_ended is not None, now)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.remote_ended = True
                if stream.chunked or stream.tail:
                    self.deliver(stream, stream.framed(b"", True), 0)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            self.waiting.pop(event.stream_id, None)
            if stream is not None:
                stream.closed()
            if event.remote_reset and self.resets.add(now):
                self._calm("h2_rapid_reset")
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            if self.control.add(now):
                self._calm("h2_control_flood")
            else:
                self.pump()
        elif isinstance(event, (h2.events.PingReceived, h2.events.PriorityUpdated, h2.events.UnknownFrameReceived,
                                h2.events.SettingsAcknowledged, h2.events.PingAckReceived)):
            if self.control.add(now):
                self._calm("h2_control_flood")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._shut()

    def _open(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool, now: float) -> None:
        self.opened += 1
        self.idle_since = now
        proxy = self.proxy
        if self.draining or proxy.closing or len(self.streams) >= self.limits.max_streams:
            # A retry on another connection is safe: nothing of the request was processed.
            proxy.stats.client_error("h2_refused_stream")
            self.conn.reset_stream(stream_id, REFUSED_STREAM)
            return
        try:
            request = translate(headers, end_stream)
        except HeadError as refusal:
            proxy.stats.client_error(refusal.reason)
            stream = self.streams[stream_id] = StreamTransport(self, stream_id, False, False, False)
            stream.remote_ended = end_stream
            stream.write(error_response(refusal.status, refusal.detail))
            return
        stream = self.streams[stream_id] = StreamTransport(
            self, stream_id, request.method == b"HEAD", request.websocket, request.chunked)
        stream.remote_ended = end_stream
        head = request.head
        if not end_stream and (b"content-length", b"0") in headers:
            head = stream.framed(head, False)  # a complete request once its last byte is in: END_STREAM
        H2Stream(proxy, stream).data_received(head)
        if self.opened >= self.limits.streams_per_connection:
            self.drain()

    def deliver(self, stream: StreamTransport, data: bytes, window: int) -> None:
        """Request bytes to the stream's parser, their window given back once it took them;
        held (within the stream's window) while it does not read."""
        protocol = stream.protocol
        if protocol is None:
            self._ack(stream.stream_id, window)
        elif not stream.reading or stream.held:
            stream.held.append((data, window))
        else:
            if data:
                protocol.data_received(data)
            self._ack(stream.stream_id, window)

    def deliver_held(self, stream: StreamTransport) -> None:
        while stream.reading and stream.held and stream.protocol is not None:
            data, window = stream.held.pop(0)
            if data:
                stream.protocol.data_received(data)
            self._ack(stream.stream_id, window)
        self._send()

    def _ack(self, stream_id: int, size: int) -> None:
        if size:
            self.conn.acknowledge_received_data(size, stream_id)

    # -- frames out ----------------------------------------------------------------------------
    def send_head(self, stream: StreamTransport, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.streams.get(stream.stream_id) is stream:
            try:
                self.conn.send_headers(stream.stream_id, headers, end_stream=end)
            except h2.exceptions.ProtocolError:
                # A worker's field HTTP/2 cannot carry (a forbidden name, a bad value): the
                # stream cannot be answered faithfully.
                self.proxy.stats.client_error("h2_bad_response_head")
                self.reset(stream, INTERNAL_ERROR)

    def pump(self, stream: StreamTransport | None = None) -> None:
        """Send what the streams have queued, as far as windows and the socket allow."""
        if stream is not None and self.streams.get(stream.stream_id) is stream:
            self.waiting[stream.stream_id] = stream
        if self.closed:
            return
        now = self.loop.time()
        if self.socket_full:
            for waiting in self.waiting.values():  # the client does not read: a stall too
                if not waiting.blocked_since:
                    waiting.blocked_since = now
        else:
            for waiting in list(self.waiting.values()):
                try:
                    self._pump_stream(waiting, now)
                except h2.exceptions.StreamClosedError:
                    self.reset(waiting, CANCEL)  # closed under it (a reset crossing our DATA)
                if self.socket_full or self.closed:
                    break
        self._send_soon()

    def _pump_stream(self, stream: StreamTransport, now: float) -> None:
        conn = self.conn
        stream_id = stream.stream_id
        out = stream.out
        while out:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                if not stream.blocked_since:
                    stream.blocked_since = now
                return
            piece = out[0]
            if len(piece) > window:
                out[0] = piece[window:]
                piece = piece[:window]
            else:
                out.pop(0)
            conn.send_data(stream_id, piece)
            stream.sent(len(piece), now)
            if len(conn._data_to_send) > WRITE_HIGH_WATER:  # noqa: SLF001  (one write per 64 KiB)
                self._send()
                if self.socket_full:
                    if out and not stream.blocked_since:
                        stream.blocked_since = now
                    return
        self.waiting.pop(stream_id, None)
        if stream.state is ENDING:
            self.finish(stream)

    def finish(self, stream: StreamTransport) -> None:
        """The response is out: END_STREAM, and RST_STREAM NO_ERROR when the client has not
        finished sending (RFC 9113 8.1: it may stop)."""
        stream_id = stream.stream_id
        if self.streams.get(stream_id) is stream:
            del self.streams[stream_id]
            self.waiting.pop(stream_id, None)
            self.conn.end_stream(stream_id)
            if not stream.remote_ended:
                self.conn.reset_stream(stream_id, NO_ERROR)
        stream.closed()
        self.idle_since = self.loop.time()
        self._send_soon()
        if self.draining and not self.streams:
            self._shut()

    def reset(self, stream: StreamTransport, code: int) -> None:
        stream_id = stream.stream_id
        if self.streams.get(stream_id) is stream:
            del self.streams[stream_id]
            self.waiting.pop(stream_id, None)
            try:
                self.conn.reset_stream(stream_id, code)
            except h2.exceptions.StreamClosedError:
                pass  # the client reset it first
        stream.closed()
        self._send_soon()
        if self.draining and not self.streams:
            self._shut()

    # -- limits, timeouts, shutdown --------------------------------------------------------------
    def _calm(self, reason: str) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM, every stream ends, the connection closes."""
        self.proxy.stats.client_error(reason)
        self.conn.close_connection(error_code=ENHANCE_YOUR_CALM)
        self._send()
        self._shut()

    def _shut(self) -> None:
        """Close after what is written (a GOAWAY); ``sweep`` aborts a client that does not
        read it within ``LINGER_SECONDS``."""
        if not self.closed:
            self._send()  # what streams queued this turn (a last response's end) goes first
            self.closed = True
            self.closed_at = self.loop.time()
            self._end_streams()
            self.transport.close()

    def drain(self) -> None:
        """No new stream (GOAWAY NO_ERROR, written as a frame of its own: the library would
        refuse every frame after it, in-flight streams' too); closed when the last stream ends."""
        if self.draining or self.closed:
            return
        self.draining = True
        frame = GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id, error_code=NO_ERROR)
        self._send()
        self.transport.write(frame.serialize())
        if not self.streams:
            self._shut()

    def sweep(self, now: float) -> None:
        proxy = self.proxy
        if self.closed:
            if now - self.closed_at > LINGER_SECONDS:
                self.transport.abort()
            return
        for stream in list(self.streams.values()):
            protocol = stream.protocol
            if protocol is not None:
                protocol.sweep(now)
            if stream.blocked_since and now - stream.blocked_since > proxy.client_timeout:
                # The client never opened its window (or never read its socket) for this long.
                proxy.stats.client_error("h2_stalled_window")
                self.reset(stream, CANCEL)
        if self.closed:
            return
        if not self.streams and now - self.idle_since > proxy.client_timeout:
            self.drain()  # idle (or a header block that never ends): as a keep-alive timeout
        self.pump()

    def in_flight(self) -> int:
        return sum(s.protocol.in_flight() for s in self.streams.values() if s.protocol is not None)

    def close_if_idle(self) -> None:
        self.drain()

    def close(self) -> None:
        for stream in list(self.streams.values()):
            protocol = stream.protocol
            if protocol is not None and protocol.tunnel is not None:
                protocol.tunnel.close()
        self._shut()


__all__ = ["H2ClientConnection"]
