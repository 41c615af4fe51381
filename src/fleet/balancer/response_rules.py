"""The response head rules of the proxy: the head a worker's response goes to the client with,
how its body is framed, and the proxy's own small answers (errors, built-in routes).

Pure functions: bytes in, bytes out, unit-tested without a socket. Hop-by-hop headers
(``balancer.request_rules.HOP_BY_HOP`` and the headers ``Connection`` names) are not
forwarded; a body is re-framed towards the client (an unframed response is sent chunked to an
HTTP/1.1 client, until the connection closes to an HTTP/1.0 one). ``response_head_raw`` sends a
common head as its bytes with a few edits, remembered in ``_PLAIN_HEADS``, which the compiled
``balancer._speedups`` reads too (``balancer.head`` hands it over). The request side is
``balancer.request_rules``.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from fleet.balancer.request_rules import HOP_BY_HOP, connection_tokens

# How the proxy frames a response body towards the client.
NO_BODY = 0  # HEAD, 1xx, 204, 304
LENGTH = 1  # the worker sent Content-Length: bytes pass through as they are
CHUNKED = 2  # the worker sent chunked or no length: re-chunked for an HTTP/1.1 client
UNTIL_CLOSE = 3  # no length, HTTP/1.0 client: the end of the body is the end of the connection

_STANDARD_CONNECTION_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})


def body_framing(status: int, head_request: bool, has_length: bool, http10_client: bool) -> int:
    """How a response body (not a 101's) is framed towards the client: none (HEAD, 1xx, 204,
    304), as the worker's Content-Length, re-chunked, or until the connection closes (an
    unframed body for an HTTP/1.0 client, whose connection then cannot be kept alive)."""
    if head_request or status < 200 or status == 204 or status == 304:
        return NO_BODY
    if has_length:
        return LENGTH
    return UNTIL_CLOSE if http10_client else CHUNKED


def response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *,
                  head_request: bool, http10_client: bool, keep_alive: bool,
                  set_cookie: bytes | None, extra: bytes | None = None) -> tuple[bytes, int, bool]:
    """The head sent to the client for a worker's response, how its body is framed towards the
    client, and whether the worker's body ends only when it closes the connection (no length).

    ``keep_alive`` is whether the client connection stays open after this response; an
    unframed body for an HTTP/1.0 client forces it closed (the caller reads that back from
    the returned framing). ``extra`` is one more header line (HSTS).
    """
    has_length = False
    chunked_in = False
    connection = b""
    upgrade = b"websocket"
    kept: list[tuple[bytes, bytes]] = []  # (lowercase name, "Name: value")
    keep = kept.append
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                connection = value
            elif lower == b"transfer-encoding":
                chunked_in = True
            elif lower == b"upgrade":
                upgrade = value
            continue
        if lower == b"content-length":
            has_length = True
        keep((lower, name + b": " + value))
    if status == 101:
        framing = NO_BODY
        keep_alive = True
    else:
        framing = body_framing(status, head_request, has_length and not chunked_in, http10_client)
        if framing == UNTIL_CLOSE:
            keep_alive = False
    if not reason:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b"Unknown"
    out = [b"HTTP/1.1 %d %s" % (status, reason)]
    append = out.append
    tokens = connection_tokens(connection) - _STANDARD_CONNECTION_TOKENS if connection else None
    if tokens or chunked_in:
        for lower, line in kept:
            if tokens and lower in tokens:
                continue  # named in Connection: hop-by-hop for this message
            if chunked_in and lower == b"content-length":
                continue  # Transfer-Encoding wins (RFC 9112 6.3); the body is re-chunked
            append(line)
    else:
        for _, line in kept:
            append(line)
    if framing == CHUNKED:
        append(b"Transfer-Encoding: chunked")
    if set_cookie is not None and status != 101:
        append(set_cookie)
    if extra is not None:
        append(extra)
    if status == 101:
        append(b"Connection: upgrade\r\nUpgrade: " + upgrade)
    elif not keep_alive:
        append(b"Connection: close")
    elif http10_client:
        append(b"Connection: keep-alive")
    append(b"\r\n")
    ends_at_close = framing in (CHUNKED, UNTIL_CLOSE) and not chunked_in
    return b"\r\n".join(out), framing, ends_at_close


# What sends a worker's response head down the general path (``response_head``): a status
# line other than ``HTTP/1.1 NNN Reason`` (rebuilt), a framing or hop-by-hop field, or a
# Connection field that names more than keep-alive/close. One regex search over the lowercase
# head, not a test per name: on Python 3.11 each ``bytes.find``/``in`` costs about a Python call.
_RESPONSE_RARE = re.compile(
    rb"\r\n(?:(?:t(?:e|railer|ransfer-encoding)|upgrade|keep-alive|proxy-connection):"
    rb"|connection:(?![ \t]*(?:keep-alive|close)[ \t]*(?:\r\n|\Z)))")
_PLAIN_STATUS = re.compile(rb"HTTP/1\.1 [0-9]{3} [^\s]")
# The plain Connection fields, removed from the bytes (case as the worker sent them).
_CONNECTION_FIELD = re.compile(rb"\r\nconnection:[ \t]*(?:keep-alive|close)[ \t]*(?=\r\n|\Z)", re.IGNORECASE)
_CONTENT_LENGTH_LINE = b"\r\ncontent-length:"


def split_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A head llhttp has accepted (``raw``: its start line and header lines, separated by CRLF,
    without the empty line) as the start line and (name, value) pairs. llhttp is strict (CRLF
    only, no obs-fold, no space before the colon), so splitting the bytes finds exactly the
    fields it parsed."""
    lines = raw.split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip(b" \t")))
    return lines[0], headers


def status_reason(start_line: bytes) -> bytes:
    """The reason phrase of a status line (``HTTP/1.1 404 Not Found`` -> ``Not Found``)."""
    parts = start_line.split(b" ", 2)
    return parts[2].strip() if len(parts) > 2 else b""


# Worker heads seen lately -> (the bytes forwarded, has Content-Length). Under load a worker
# sends the same head bytes many times a second (only Date changes, once a second), and reading
# a head costs several regex and bytes calls: a dict lookup instead. Bounded: cleared when full.
# Only 2xx-5xx heads on the plain path are kept (what is stored depends on the bytes alone).
_PLAIN_HEADS: dict[bytes, tuple[bytes, bool]] = {}
_PLAIN_HEADS_MAX = 256
_PLAIN_HEAD_MAX_SIZE = 4096  # a larger head is read each time: the cache stays under ~2 MiB


def _plain_head(raw: bytes) -> tuple[bytes, bool] | None:
    """A head for the plain path: its bytes without Connection, and whether it has a
    Content-Length. None: the general path (``response_head``) must take it apart."""
    lower = raw.lower()
    if _PLAIN_STATUS.match(raw) is None or _RESPONSE_RARE.search(lower) is not None:
        return None
    if lower.partition(b"\r\nconnection:")[1]:
        raw = _CONNECTION_FIELD.sub(b"", raw)
    return raw, bool(lower.partition(_CONTENT_LENGTH_LINE)[1])


def response_head_raw(raw: bytes, status: int, head_request: bool, http10_client: bool, keep_alive: bool,
                      set_cookie: bytes | None, extra: bytes | None = None) -> tuple[bytes, int, bool]:
    """``response_head`` from the worker's head bytes as llhttp accepted them (status line and
    header lines separated by CRLF, without the final empty line): the same answer, but a common
    head (``HTTP/1.1 NNN Reason``, no framing or hop-by-hop field but ``Connection: keep-alive``
    or ``close``) goes out as its bytes with the few edits, not taken apart and rebuilt."""
    known = _PLAIN_HEADS.get(raw)
    if known is None:
        if status == 101 or status < 200:
            return _response_head_split(raw, status, head_request, http10_client, keep_alive, set_cookie, extra)
        known = _plain_head(raw)
        if known is None:
            return _response_head_split(raw, status, head_request, http10_client, keep_alive, set_cookie, extra)
        if len(raw) <= _PLAIN_HEAD_MAX_SIZE:
            if len(_PLAIN_HEADS) >= _PLAIN_HEADS_MAX:
                _PLAIN_HEADS.clear()
            _PLAIN_HEADS[raw] = known
    raw, has_length = known
    framing = body_framing(status, head_request, has_length, http10_client)
    if framing == UNTIL_CLOSE:
        keep_alive = False
    out = [raw, b"\r\n"]
    if framing == CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if set_cookie is not None:
        out.append(set_cookie + b"\r\n")
    if extra is not None:
        out.append(extra + b"\r\n")
    if not keep_alive:
        out.append(b"Connection: close\r\n\r\n")
    elif http10_client:
        out.append(b"Connection: keep-alive\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out), framing, framing == CHUNKED or framing == UNTIL_CLOSE


def _response_head_split(raw: bytes, status: int, head_request: bool, http10_client: bool, keep_alive: bool,
                         set_cookie: bytes | None, extra: bytes | None) -> tuple[bytes, int, bool]:
    start_line, headers = split_head(raw)
    return response_head(status, status_reason(start_line), headers, head_request=head_request,
                         http10_client=http10_client, keep_alive=keep_alive, set_cookie=set_cookie, extra=extra)


def error_response(status: int, detail: str = "", *, close: bool = True, head_only: bool = False,
                   extra: bytes = b"") -> bytes:
    """A small text/plain answer from the proxy itself (400, 413, 431, 502, 503, 504, ...)."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}: {detail}\n".encode() if detail and detail != phrase else f"{status} {phrase}\n".encode()
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\n" % (status, phrase.encode(), len(body)))
    head += extra
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + (b"" if head_only else body)


def local_response(status: int, content_type: str, body: bytes, *, close: bool, http10: bool,
                   head_only: bool, extra: bytes = b"") -> bytes:
    """A response the proxy serves itself (``/metrics``, ``/_fleet/...``); ``extra``: more
    header lines, each ending in CRLF (the status page's Content-Security-Policy)."""
    phrase = HTTPStatus(status).phrase.encode()
    connection = b"Connection: close\r\n" if close else (b"Connection: keep-alive\r\n" if http10 else b"")
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\n%s%s\r\n"
            % (status, phrase, content_type.encode(), len(body), extra, connection))
    return head if head_only else head + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
