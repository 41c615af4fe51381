"""An HTTP/2 request as the HTTP/1.1 head fleet's rules read: pure, bytes in, bytes out.

Each HTTP/2 stream becomes an HTTP/1.1 request fed to the same parser and the same rules as a
request read from a socket (``balancer.protocol``, ``balancer.request_rules``): hosts, origins,
forwarding headers, sizes and built-in routes are judged once, in one place. This module only
translates, and refuses what HTTP/1.1 could not carry faithfully:

- a byte that would end a line or a field early (CR, LF, NUL in any name or value; a space or
  control byte in the method, path or authority): one HTTP/2 field must stay one HTTP/1.1 field
  (the smuggling that HTTP/2-to-1 translation invites);
- ``:authority`` and a ``Host`` that name different hosts (RFC 9113 8.3.1);
- plain ``CONNECT`` (a forward-proxy tunnel) and extended CONNECT for anything but WebSocket.

An extended CONNECT with ``:protocol websocket`` (RFC 8441) becomes the HTTP/1.1 Upgrade a
worker understands, with a fresh ``Sec-WebSocket-Key`` (HTTP/2 has none): the worker's 101 is
turned into the stream's 200 by ``balancer.h2stream``. A request body of unknown length (no
``content-length``, the stream not ended with its head) is framed chunked for the parser.
"""

from __future__ import annotations

import base64
import os
import re
from typing import NamedTuple

from fleet.balancer.head import HeadError

# Bytes that may not appear in a field value (they would end the line in HTTP/1.1).
_BREAKS_LINE = re.compile(rb"[\r\n\x00]")
# Bytes that may not appear in the request line's parts (they would split it).
_BREAKS_TARGET = re.compile(rb"[\x00-\x20\x7f]")
# Field names HTTP/2 forbids anyway (h2 validates them) plus the ones this module writes itself.
_REPLACED = frozenset({b"host", b"connection", b"upgrade", b"transfer-encoding", b"keep-alive",
                       b"proxy-connection", b"sec-websocket-key"})


class H2Request(NamedTuple):
    """The HTTP/1.1 head of a stream, and how its body is framed for the parser."""

    head: bytes
    method: bytes
    websocket: bool  # an RFC 8441 extended CONNECT: a tunnel once the worker answers 101
    chunked: bool  # DATA frames are framed as chunks (no content-length was given)


def websocket_key() -> bytes:
    """A fresh Sec-WebSocket-Key: the worker checks its form; the client never sees it."""
    return base64.b64encode(os.urandom(16))


def translate(headers: list[tuple[bytes, bytes]], end_stream: bool, key: bytes = b"") -> H2Request:
    """The HTTP/1.1 request head for a stream's decoded ``headers``; ``end_stream``: the
    HEADERS frame ended the stream (no body). Raises ``HeadError`` with the status to answer."""
    method = path = authority = protocol = b""
    fields: list[bytes] = []
    host = b""
    has_length = False
    for name, value in headers:
        if _BREAKS_LINE.search(name) or _BREAKS_LINE.search(value):
            raise HeadError(400, "bad_h2_field", "a header field holds CR, LF or NUL")
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                protocol = value
            continue  # :scheme: the proxy's own scheme is what is forwarded
        if name in _REPLACED:
            if name == b"host":
                host = value
            continue
        if name == b"content-length":
            has_length = True
        fields.append(b"%s: %s\r\n" % (name, value))
    if not method or _BREAKS_TARGET.search(method) or _BREAKS_TARGET.search(path) or _BREAKS_TARGET.search(authority):
        raise HeadError(400, "bad_h2_request", "malformed request pseudo-header")
    if authority and host and host != authority:
        raise HeadError(400, "bad_host", ":authority and Host differ")
    host = authority or host
    websocket = False
    if method == b"CONNECT":
        if not protocol:
            raise HeadError(405, "bad_method", "CONNECT is not supported by a reverse proxy")
        if protocol.lower() != b"websocket":
            raise HeadError(501, "bad_upgrade", "only the websocket protocol may be CONNECTed")
        if end_stream:
            raise HeadError(400, "bad_upgrade", "a WebSocket CONNECT ended its stream")
        websocket = True
        method = b"GET"
        fields.append(b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: %s\r\n"
                      % (key or websocket_key()))
    elif protocol:
        raise HeadError(400, "bad_h2_request", ":protocol without CONNECT")
    if not path:
        raise HeadError(400, "bad_h2_request", "no :path")
    chunked = not end_stream and not has_length and not websocket
    if chunked:
        fields.append(b"transfer-encoding: chunked\r\n")
    start = b"%s %s HTTP/1.1\r\n" % (method, path)
    host_line = b"host: %s\r\n" % host if host else b""
    return H2Request(start + host_line + b"".join(fields) + b"\r\n", method, websocket, chunked)


__all__ = ["H2Request", "translate", "websocket_key"]
