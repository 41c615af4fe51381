"""The request head rules of the proxy: what of a client's request is accepted, and the head
forwarded to the worker.

Pure functions over already-parsed heads (``httptools`` does the byte-level parsing in
``balancer.protocol``): bytes in, a ``Request`` or a ``HeadError`` out, so every rule is
unit-tested without a socket. The rules follow RFC 9110/9112 and what nginx does as a reverse
proxy:

- request smuggling: ``Content-Length`` together with ``Transfer-Encoding``, conflicting or
  malformed lengths, and transfer codings other than ``chunked`` are rejected (400);
- hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``, ``TE``,
  ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Connection``) are not forwarded;
  a chunked body is re-chunked on its way to the worker;
- forwarding claims (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``, ``X-Scheme``, ...: see
  ``balancer.trust``) from a peer that is not a ``--trusted-proxy`` are dropped, and fleet sets
  its own ``X-Forwarded-For/-Proto/-Host`` and ``X-Real-IP``; a trusted proxy's are kept and
  extended, with ``X-Real-IP`` the address resolved through the trusted hops;
- an absolute-form target (``GET http://host/path``) is checked and forwarded in origin-form,
  its authority replacing ``Host`` (RFC 9112 3.2.2).

The compiled ``balancer._speedups`` reads ``Request``, ``_REQUEST_SPECIAL`` and
``_VALID_HOSTS`` from here (``balancer.head`` hands them over) and numbers the header kinds as
``KIND_NAMES`` does. The response side is ``balancer.response_rules``.
"""

from __future__ import annotations

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
 _CLAIM, _WS_PROTOCOL, _SESSION_ID, _IF_NONE_MATCH, _IF_MODIFIED_SINCE, _ACCEPT_ENCODING, _RANGE,
 _IF_RANGE) = range(17)
# Those kinds by name, in their order: the C code (``_speedups.KIND_NAMES``) numbers them alike.
KIND_NAMES = ("hop", "connection", "upgrade", "transfer-encoding", "forwarding", "host", "content-length",
              "cookie", "origin", "claim", "sec-websocket-protocol", "bokeh-session-id", "if-none-match",
              "if-modified-since", "accept-encoding", "range", "if-range")
_REQUEST_SPECIAL: dict[bytes, int] = {
    **{name: _HOP for name in HOP_BY_HOP}, **{name: _CLAIM for name in FORWARDING_HEADERS},
    **{name: _FORWARDING for name in FORWARDING},
    b"connection": _CONNECTION, b"upgrade": _UPGRADE, b"transfer-encoding": _TRANSFER_ENCODING,
    b"host": _HOST, b"content-length": _CONTENT_LENGTH, b"cookie": _COOKIE, b"origin": _ORIGIN,
    # Remembered and forwarded as they are (Bokeh session affinity, the proxy's static files).
    b"sec-websocket-protocol": _WS_PROTOCOL, b"bokeh-session-id": _SESSION_ID,
    b"if-none-match": _IF_NONE_MATCH, b"if-modified-since": _IF_MODIFIED_SINCE,
    # Remembered for compression (balancer.encoding) and ranges of static files.
    b"accept-encoding": _ACCEPT_ENCODING, b"range": _RANGE, b"if-range": _IF_RANGE,
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
                 "bokeh_protocol", "bokeh_session", "if_none_match", "if_modified_since", "accept_encoding",
                 "range", "if_range")

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
        self.accept_encoding: bytes | None = None  # the last one, as the C code keeps it
        self.range: bytes | None = None
        self.if_range: bytes | None = None


def parse_length(value: bytes) -> int:
    """A Content-Length value; ``1, 1`` style lists must agree (RFC 9110 8.6), else 400."""
    parts = {part.strip() for part in value.split(b",")}
    if len(parts) != 1:
        raise HeadError(400, "bad_content_length", "conflicting Content-Length")
    text = parts.pop()
    if not text or len(text) > 18 or not set(text) <= _DIGITS:
        raise HeadError(400, "bad_content_length", "malformed Content-Length")
    return int(text)


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
            elif kind == _IF_MODIFIED_SINCE:
                request.if_modified_since = value
            elif kind == _ACCEPT_ENCODING:
                request.accept_encoding = value
            elif kind == _RANGE:
                request.range = value
            else:
                request.if_range = value
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

