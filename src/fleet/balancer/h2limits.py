"""The bounds of an HTTP/2 connection, and the counters that turn a flood into a GOAWAY: pure.

HTTP/2 lets a client ask for work far cheaper than the work it asks for. Each known attack has
its bound here, read by ``balancer.h2conn``:

- rapid reset (CVE-2023-44487): streams opened and reset at once cost the proxy a dispatch each
  while the client's concurrency limit never fills; resets are counted per window, and past
  ``max_resets`` the connection gets GOAWAY ENHANCE_YOUR_CALM. Streams the proxy still works on
  after a reset count against ``max_streams`` until they are unwound.
- CONTINUATION flood (CVE-2024-27316): a header block is bounded by ``header_list_size`` once
  decoded and by the h2 library's 64-frame backlog (64 frames of at most 16 KiB) before; a
  block that never ends is closed by the connection's idle timeout.
- HPACK bomb: the decoder stops at ``header_list_size`` (the decoded size, not the wire size)
  and the dynamic table stays at 4 KiB.
- SETTINGS, PING, WINDOW_UPDATE, PRIORITY, empty DATA, unknown frames: each answered or cheap,
  but counted together per window; past ``max_control`` the connection is told to calm down.
- too many streams: SETTINGS_MAX_CONCURRENT_STREAMS is advertised (a client past it breaks the
  protocol: h2 sends GOAWAY PROTOCOL_ERROR), and a new stream while ``max_streams`` are still
  being worked on is refused with RST_STREAM REFUSED_STREAM.
- a stalled window: response bytes that cannot be sent because the client never opens its
  window for ``--client-timeout`` end the stream (RST_STREAM CANCEL).
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.exceptions

# Per-stream receive window (the HTTP/2 default) and the connection's: request bytes the client
# may send before the proxy has read them, so the most held for one connection's streams.
STREAM_WINDOW = 65535
CONNECTION_WINDOW = 1024 * 1024
# A stream's response bytes waiting for the client's window: past HIGH the worker is no
# longer read for it, below LOW it is again.
OUT_HIGH = 64 * 1024
OUT_LOW = 16 * 1024


@dataclass(frozen=True)
class H2Limits:
    """One HTTP/2 connection's bounds (counts per ``window`` seconds; sizes in bytes)."""

    max_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS, and streams still being unwound
    header_list_size: int = 65536  # SETTINGS_MAX_HEADER_LIST_SIZE: decoded fields, 32 bytes each more
    streams_per_connection: int = 10000  # then GOAWAY NO_ERROR: a new connection spreads the load
    window: float = 10.0
    max_resets: int = 200  # client resets per window (twice the streams it may have open)
    max_control: int = 1000  # SETTINGS/PING/WINDOW_UPDATE/PRIORITY/empty frames per window

    @classmethod
    def for_headers(cls, max_header_size: int, max_header_count: int) -> "H2Limits":
        """Bounds that let fleet's own header rules answer 431 on the stream for what is just
        past --max-header-size, and refuse outright what is far past it (HPACK counts 32 bytes
        more per field than the HTTP/1.1 line it becomes)."""
        return cls(header_list_size=max_header_size + 32 * (max_header_count + 8))


class RateWindow:
    """Events counted in a fixed window of ``span`` seconds; ``add`` says whether the count is
    past ``limit``. The time comes in as an argument: tests drive it."""

    __slots__ = ("span", "limit", "start", "count")

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self.start = 0.0
        self.count = 0

    def add(self, now: float, events: int = 1) -> bool:
        """Count ``events`` at ``now``; True when the window is over its limit."""
        if now - self.start >= self.span:
            self.start = now
            self.count = 0
        self.count += events
        return self.count > self.limit


def error_reason(exc: h2.exceptions.ProtocolError) -> str:
    """The counter a protocol error is counted under (``fleet_client_errors_total{reason}``)."""
    if isinstance(exc, h2.exceptions.TooManyStreamsError):
        return "h2_too_many_streams"
    if isinstance(exc, h2.exceptions.DenialOfServiceError):
        return "h2_header_list_too_large"
    if "continuation" in str(exc).lower():
        return "h2_continuation_flood"
    return "h2_protocol_error"


__all__ = ["CONNECTION_WINDOW", "H2Limits", "OUT_HIGH", "OUT_LOW", "RateWindow", "STREAM_WINDOW", "error_reason"]
