"""HTTP head rules of the proxy: what is accepted, what is forwarded, how a body is framed.

Pure functions over already-parsed heads (``httptools`` does the byte-level parsing in
``balancer.protocol``): bytes in, bytes or a ``HeadError`` out, so every rule is unit-tested
without a socket. The rules follow RFC 9110/9112 and what nginx does as a reverse proxy:

- request smuggling: ``Content-Length`` together with ``Transfer-Encoding``, conflicting or
  malformed lengths, and transfer codings other than ``chunked`` are rejected (400);
- hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``, ``TE``,
  ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Connection``) are not forwarded;
  bodies are re-framed on each side (a chunked body is re-chunked, an unframed response is
  sent chunked to an HTTP/1.1 client);
- forwarding claims (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``, ``X-Scheme``, ...: see
  ``balancer.trust``) from a peer that is not a ``--trusted-proxy`` are dropped, and fleet sets
  its own ``X-Forwarded-For/-Proto/-Host`` and ``X-Real-IP``; a trusted proxy's are kept and
  extended, with ``X-Real-IP`` the address resolved through the trusted hops;
- an absolute-form target (``GET http://host/path``) is checked and forwarded in origin-form,
  its authority replacing ``Host`` (RFC 9112 3.2.2).
"""

from __future__ import annotations

import os
import re
from http import HTTPStatus

from fleet.balancer.trust import FORWARDING_HEADERS, TrustedProxies

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})
# The forwarding headers fleet sets itself (any other forwarding claim is dropped unless the
# peer is a trusted proxy: ``balancer.trust.is_forwarding_header``).
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_DIGITS = frozenset(b"0123456789")
# What forward_request does with a header, by lowercase name; absent: forwarded as it is.
# _CLAIM: a forwarding claim fleet does not set itself (X-Scheme, Forwarded, ...): kept only
# from a trusted proxy. Other ``X-Forwarded-*`` names are caught by their prefix.
(_HOP, _CONNECTION, _UPGRADE, _TRANSFER_ENCODING, _FORWARDING, _HOST, _CONTENT_LENGTH, _COOKIE, _ORIGIN,
 _CLAIM, _WS_PROTOCOL, _SESSION_ID, _IF_NONE_MATCH, _IF_MODIFIED_SINCE) = range(14)
# Those kinds by name, in their order: the C code (``_speedups.KIND_NAMES``) numbers them alike.
KIND_NAMES = ("hop", "connection", "upgrade", "transfer-encoding", "forwarding", "host", "content-length",
              "cookie", "origin", "claim", "sec-websocket-protocol", "bokeh-session-id", "if-none-match",
              "if-modified-since")
_REQUEST_SPECIAL: dict[bytes, int] = {
    **{name: _HOP for name in HOP_BY_HOP}, **{name: _CLAIM for name in FORWARDING_HEADERS},
    **{name: _FORWARDING for name in FORWARDING},
    b"connection": _CONNECTION, b"upgrade": _UPGRADE, b"transfer-encoding": _TRANSFER_ENCODING,
    b"host": _HOST, b"content-length": _CONTENT_LENGTH, b"cookie": _COOKIE, b"origin": _ORIGIN,
    # Remembered and forwarded as they are (Bokeh session affinity, the proxy's static files).
    b"sec-websocket-protocol": _WS_PROTOCOL, b"bokeh-session-id": _SESSION_ID,
    b"if-none-match": _IF_NONE_MATCH, b"if-modified-since": _IF_MODIFIED_SINCE,
}
# RFC 3986 host (reg-name or IP literal) and optional port; no comma (a merged list of hosts).
_VALID_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9._~!$&'()*+;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")

# Host values already checked against _VALID_HOST: a client sends the same Host on every
# request, and the regex costs as much as several Python calls. Bounded: past the bound,
# new values are checked each time (a client cannot grow it).
_VALID_HOSTS: dict[bytes, bool] = {}
_VALID_HOSTS_MAX = 1024


def valid_host(value: bytes) -> bool:
    """Whether a Host value (or absolute-form authority) is an RFC 3986 host with optional port."""
    known = _VALID_HOSTS.get(value)
    if known is None:
        known = _VALID_HOST.fullmatch(value) is not None
        if len(_VALID_HOSTS) < _VALID_HOSTS_MAX:
            _VALID_HOSTS[value] = known
    return known


# How the proxy frames a response body towards the client.
NO_BODY = 0  # HEAD, 1xx, 204, 304
LENGTH = 1  # the worker sent Content-Length: bytes pass through as they are
CHUNKED = 2  # the worker sent chunked or no length: re-chunked for an HTTP/1.1 client
UNTIL_CLOSE = 3  # no length, HTTP/1.0 client: the end of the body is the end of the connection


class HeadError(Exception):
    """A request the proxy refuses; ``status`` is the answer, ``reason`` the metrics label."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail or HTTPStatus(status).phrase


class Request:
    """What the proxy needs to know about one request head, and the head it forwards."""

    __slots__ = ("method", "host", "affinity_cookie", "origin", "content_length", "chunked",
                 "websocket", "forward", "keep_alive", "http10", "path", "client", "query",
                 "bokeh_protocol", "bokeh_session", "if_none_match", "if_modified_since")

    def __init__(self, method: bytes = b"", http10: bool = False, keep_alive: bool = True) -> None:
        self.method = method
        self.path = b""
        self.host: bytes | None = None
        self.affinity_cookie: bytes | None = None
        self.origin: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.websocket = False
        self.forward = b""
        self.keep_alive = keep_alive
        self.http10 = http10
        # The client's address, resolved through trusted proxies (``balancer.trust``): what
        # every rule about "who is this client" and the access log use.
        self.client = b""
        self.query = b""
        # What names a Bokeh session (balancer.bokeh_session) and asks for a 304 (static files).
        self.bokeh_protocol: bytes | None = None
        self.bokeh_session: bytes | None = None
        self.if_none_match: bytes | None = None
        self.if_modified_since: bytes | None = None


def parse_length(value: bytes) -> int:
    """A Content-Length value; ``1, 1`` style lists must agree (RFC 9110 8.6), else 400."""
    parts = {part.strip() for part in value.split(b",")}
    if len(parts) != 1:
        raise HeadError(400, "bad_content_length", "conflicting Content-Length")
    text = parts.pop()
    if not text or len(text) > 18 or not set(text) <= _DIGITS:
        raise HeadError(400, "bad_content_length", "malformed Content-Length")
    return int(text)


_STANDARD_CONNECTION_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})


def connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def split_absolute_target(url: bytes) -> tuple[bytes, bytes]:
    """``http://Host:80/path?q`` -> (``Host:80``, ``/path?q``): an absolute-form target's
    authority and the origin-form target the worker gets (RFC 9112 3.2.2). Raises ``HeadError``
    for a missing or malformed authority, or one with userinfo (``http://user@host/``)."""
    start = url.index(b"://") + 3
    end = len(url)
    for mark in (b"/", b"?", b"#"):
        found = url.find(mark, start)
        if 0 <= found < end:
            end = found
    authority = url[start:end]
    if not authority or b"@" in authority or not valid_host(authority) or authority.startswith(b":"):
        raise HeadError(400, "bad_request_target", "malformed authority in the request target")
    target = url[end:]
    if not target.startswith(b"/"):
        target = b"/" + target
    return authority, target


def forward_request(method: bytes, url: bytes, http10: bool, keep_alive: bool, upgrade: bool,
                    headers: list[tuple[bytes, bytes]], client_ip: bytes, scheme: bytes,
                    trusted: TrustedProxies, default_host: bytes) -> Request:
    """Check a parsed request head and build the head to send to the worker (HTTP/1.1,
    keep-alive to the worker, forwarding headers set). Raises ``HeadError``.

    ``client_ip`` is the connection's peer; forwarding headers are believed only when it is in
    ``trusted`` (``--trusted-proxy``)."""
    if method == b"CONNECT":
        raise HeadError(405, "bad_method", "CONNECT is not supported by a reverse proxy")
    authority: bytes | None = None
    if not url:
        raise HeadError(400, "bad_request_target", "malformed request target")
    if url[0] != 47:  # 47: "/", the origin form every browser sends
        if url.startswith((b"http://", b"https://")):
            authority, url = split_absolute_target(url)
        elif not (url == b"*" and method == b"OPTIONS"):
            raise HeadError(400, "bad_request_target", "malformed request target")
    request = Request(method, http10, keep_alive)
    # partition, not find: bytes.find parses its arguments the slow way (a cost per request).
    request.path, question, query = url.partition(b"?")
    if question:
        request.query = query
    peer_trusted = trusted.any and trusted.is_trusted(client_ip)
    connection = b""
    upgrade_value = b""
    transfer_encoding: bytes | None = None
    forwarded: dict[bytes, bytes] = {}
    kept: list[tuple[bytes, bytes]] = []  # (lowercase name, "Name: value")
    keep = kept.append
    special = _REQUEST_SPECIAL.get
    for name, value in headers:
        lower = name.lower()
        kind = special(lower)
        if kind is None:
            if not peer_trusted and lower[:12] == b"x-forwarded-":  # a slice: startswith costs a call
                continue  # a forwarding claim from a client: dropped (balancer.trust)
            keep((lower, name + b": " + value))
            continue
        if kind == _HOP:
            continue
        if kind == _CONNECTION:
            connection = connection + b"," + value if connection else value
        elif kind == _UPGRADE:
            upgrade_value = value
        elif kind == _TRANSFER_ENCODING:
            transfer_encoding = value if transfer_encoding is None else transfer_encoding + b"," + value
        elif kind == _FORWARDING:
            if peer_trusted:
                previous = forwarded.get(lower)
                forwarded[lower] = value if previous is None else previous + b", " + value
        elif kind == _CLAIM:
            if peer_trusted:
                keep((lower, name + b": " + value))
        elif kind == _HOST:
            if request.host is not None:
                raise HeadError(400, "bad_host", "more than one Host header")
            host_value = value.strip()
            if not (_VALID_HOSTS.get(host_value) or valid_host(host_value)):  # the cache first: no call
                raise HeadError(400, "bad_host", "invalid Host header")
            request.host = host_value
            if authority is None:
                keep((lower, name + b": " + value))
        elif kind == _CONTENT_LENGTH:
            length = parse_length(value)
            if request.content_length is not None and request.content_length != length:
                raise HeadError(400, "bad_content_length", "conflicting Content-Length")
            request.content_length = length  # re-added once below: agreeing duplicates go out as one
        elif kind == _COOKIE:
            request.affinity_cookie = value if request.affinity_cookie is None else request.affinity_cookie + b"; " + value
            keep((lower, name + b": " + value))
        elif kind == _ORIGIN:
            request.origin = value
            keep((lower, name + b": " + value))
        else:  # remembered, then forwarded unchanged
            if kind == _WS_PROTOCOL:
                request.bokeh_protocol = value
            elif kind == _SESSION_ID:
                request.bokeh_session = value
            elif kind == _IF_NONE_MATCH:
                request.if_none_match = value
            else:
                request.if_modified_since = value
            keep((lower, name + b": " + value))
    if transfer_encoding is not None:
        if http10:
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            raise HeadError(400, "bad_transfer_encoding", "Transfer-Encoding in an HTTP/1.0 request")
        if request.content_length is not None:
            raise HeadError(400, "smuggling", "Content-Length with Transfer-Encoding")
        if transfer_encoding.strip().lower() != b"chunked":
            raise HeadError(400, "bad_transfer_encoding", "only Transfer-Encoding: chunked is accepted")
        request.chunked = True
    if request.host is None and not http10:
        raise HeadError(400, "bad_host", "HTTP/1.1 request without Host")
    if authority is not None:
        # RFC 9112 3.2.2: the target's authority replaces Host (checked against --allow-host
        # like a Host header would be, by the caller).
        request.host = authority
        keep((b"host", b"Host: " + authority))
    elif request.host is None:
        request.host = default_host
        keep((b"host", b"Host: " + default_host))
    out = [method + b" " + url + b" HTTP/1.1"]
    append = out.append
    if connection:
        tokens = connection_tokens(connection) - {b"host"}
        if upgrade and upgrade_value.strip().lower() == b"websocket" and b"upgrade" in tokens:
            request.websocket = True
        for lower, line in kept:
            if lower not in tokens:  # a header named in Connection is hop-by-hop for this message
                append(line)
    else:
        for _, line in kept:
            append(line)
    if request.content_length is not None:
        append(b"Content-Length: %d" % request.content_length)
    elif request.chunked:
        append(b"Transfer-Encoding: chunked")
    host = request.host
    if peer_trusted:
        previous_for = forwarded.get(b"x-forwarded-for")
        client = trusted.resolve(client_ip, previous_for, forwarded.get(b"x-real-ip"))
        append(b"X-Forwarded-For: " + (previous_for + b", " + client_ip if previous_for else client_ip))
        append(b"X-Forwarded-Proto: " + forwarded.get(b"x-forwarded-proto", scheme))
        append(b"X-Forwarded-Host: " + forwarded.get(b"x-forwarded-host", host))
        append(b"X-Real-IP: " + client)
    else:
        client = client_ip
        append(b"".join((b"X-Forwarded-For: ", client_ip, b"\r\nX-Forwarded-Proto: ", scheme,
                         b"\r\nX-Forwarded-Host: ", host, b"\r\nX-Real-IP: ", client_ip)))
    request.client = client
    if request.websocket:
        append(b"Connection: upgrade\r\nUpgrade: " + upgrade_value.strip())
    append(b"\r\n")
    request.forward = b"\r\n".join(out)
    return request


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


def _load_speedups() -> object | None:
    """The optional C module (``balancer/_speedups.c``): the common request head and a cached
    response head without a Python frame. None when it was not built (no compiler at install)
    or ``FLEET_PURE_PYTHON=1``; the functions above do the same work then. It declines (None)
    whatever it does not handle, so every rule and every refusal stays written here, once."""
    if os.environ.get("FLEET_PURE_PYTHON", "") == "1":
        return None
    try:
        from fleet.balancer import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(_speedups, "KIND_NAMES", None) != KIND_NAMES:
        return None  # built from another version of this file: not to be trusted
    _speedups.configure(Request, _REQUEST_SPECIAL, _VALID_HOSTS, _PLAIN_HEADS)
    return _speedups


SPEEDUPS = _load_speedups()
# request_head(method, url, http10, keep_alive, headers, client_ip, scheme, default_host) ->
# Request | None, for a peer that is not a --trusted-proxy; None: call forward_request.
FAST_REQUEST_HEAD = getattr(SPEEDUPS, "request_head", None)
# response_head(raw, status, head_request, http10_client, keep_alive, set_cookie, extra) ->
# response_head_raw's answer | None; None: call response_head_raw.
FAST_RESPONSE_HEAD = getattr(SPEEDUPS, "response_head", None)
HOT_PATH = "compiled" if SPEEDUPS is not None else "pure Python"
