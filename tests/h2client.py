"""A small blocking HTTP/2 client for the tests: the h2 library over a TLS socket (ALPN h2).

Real sockets, real frames: the tests drive fleet's HTTP/2 side with it, and its ``raw`` lets a
test write frames the library would never send (floods, broken header blocks).
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class Reply:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None


class H2Client:
    def __init__(self, port: int, timeout: float = 10.0, settings: dict[int, int] | None = None) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.port = port
        self.timeout = timeout
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.replies: dict[int, Reply] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def headers(self, path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None,
                end: bool = True, authority: str | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        pairs = [(":method", method), (":scheme", "https"), (":authority", authority or f"127.0.0.1:{self.port}"),
                 (":path", path), *(extra or [])]
        self.conn.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in pairs], end_stream=end)
        self.replies[stream_id] = Reply()
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """DATA within the flow-control windows (waits for the server to open them)."""
        while True:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0 and data:
                if not self.read_once():
                    raise ConnectionError("closed while waiting for the window")
                continue
            piece, data = data[:window], data[window:]
            self.conn.send_data(stream_id, piece, end_stream=end and not data)
            self.flush()
            if not data:
                return

    def read_once(self, timeout: float | None = None) -> bool:
        """One read from the socket, its events recorded; False when the connection closed."""
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                reply = self.replies.setdefault(event.stream_id, Reply())
                reply.headers = dict(event.headers)
                reply.status = int(reply.headers[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.replies.setdefault(event.stream_id, Reply()).body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.replies.setdefault(event.stream_id, Reply()).ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.replies.setdefault(event.stream_id, Reply()).reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings.update({k: v.new_value for k, v in event.changed_settings.items()})
        try:
            self.flush()
        except OSError:
            pass
        return True

    def wait(self, condition, timeout: float | None = None) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if not self.read_once(left):
                    return bool(condition())
            except socket.timeout:
                return bool(condition())
        return True

    def response(self, stream_id: int, timeout: float | None = None) -> Reply:
        reply = self.replies[stream_id]
        self.wait(lambda: reply.ended or reply.reset is not None or self.closed, timeout)
        return reply

    def get(self, path: str = "/", **kwargs) -> Reply:  # type: ignore[no-untyped-def]
        return self.response(self.headers(path, **kwargs))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "H2Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame, bytes as on the wire (RFC 9113 4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client-to-server WebSocket frame (masked)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_payload(data: bytes) -> tuple[int, bytes, bytes]:
    """(opcode, payload, rest) of the first unmasked server frame in ``data``."""
    opcode, size, offset = data[0] & 0x0F, data[1] & 0x7F, 2
    if size == 126:
        size, offset = struct.unpack(">H", data[2:4])[0], 4
    elif size == 127:
        size, offset = struct.unpack(">Q", data[2:10])[0], 10
    return opcode, data[offset:offset + size], data[offset + size:]
