"""The proxy's HTTP head rules, without sockets: smuggling, hop-by-hop, forwarding, framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import httptools

from fleet.balancer.head import (
    CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, HeadError, error_response, forward_request, response_head,
    response_head_raw, split_head,
)
from fleet.balancer.trust import TrustedProxies

NOBODY = TrustedProxies()
PEER = TrustedProxies(["10.0.0.9"])


def forward(headers: list[tuple[bytes, bytes]], *, method: bytes = b"GET", url: bytes = b"/",
            http10: bool = False, upgrade: bool = False, trust: bool = False):  # type: ignore[no-untyped-def]
    return forward_request(method, url, http10, True, upgrade, headers, b"10.0.0.9", b"http",
                           PEER if trust else NOBODY,
                           b"127.0.0.1:5006")


def header_lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")[1:-2]


def test_forwarded_head_keeps_end_to_end_headers_and_sets_forwarding() -> None:
    request = forward([(b"Host", b"app.test"), (b"Cookie", b"fleet_affinity=w1"), (b"Accept", b"*/*"),
                       (b"X-Forwarded-For", b"6.6.6.6"), (b"Connection", b"keep-alive, X-Drop"),
                       (b"X-Drop", b"1"), (b"Keep-Alive", b"300"), (b"TE", b"trailers")])
    assert request.forward.startswith(b"GET / HTTP/1.1\r\n")
    lines = header_lines(request.forward)
    assert b"Host: app.test" in lines and b"Accept: */*" in lines and b"Cookie: fleet_affinity=w1" in lines
    assert b"X-Forwarded-For: 10.0.0.9" in lines and b"X-Real-IP: 10.0.0.9" in lines
    assert b"X-Forwarded-Proto: http" in lines and b"X-Forwarded-Host: app.test" in lines
    assert not any(line.lower().startswith((b"x-drop", b"keep-alive", b"te:", b"connection")) for line in lines)
    assert request.affinity_cookie == b"fleet_affinity=w1" and request.host == b"app.test"


def test_trusted_xheaders_are_extended_not_replaced() -> None:
    request = forward([(b"Host", b"a"), (b"X-Forwarded-For", b"1.1.1.1"), (b"X-Forwarded-Proto", b"https"),
                       (b"X-Real-IP", b"1.1.1.1")], trust=True)
    lines = header_lines(request.forward)
    assert b"X-Forwarded-For: 1.1.1.1, 10.0.0.9" in lines
    assert b"X-Forwarded-Proto: https" in lines and b"X-Real-IP: 1.1.1.1" in lines


@pytest.mark.parametrize("headers, reason", [
    ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], "smuggling"),
    ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Content-Length", b"4")], "bad_content_length"),
    ([(b"Host", b"a"), (b"Content-Length", b"3, 4")], "bad_content_length"),
    ([(b"Host", b"a"), (b"Content-Length", b"-1")], "bad_content_length"),
    ([(b"Host", b"a"), (b"Content-Length", b"0x10")], "bad_content_length"),
    ([(b"Host", b"a"), (b"Transfer-Encoding", b"gzip, chunked")], "bad_transfer_encoding"),
    ([(b"Host", b"a"), (b"Host", b"b")], "bad_host"),
    ([], "bad_host"),
])
def test_ambiguous_heads_are_refused_with_400(headers: list[tuple[bytes, bytes]], reason: str) -> None:
    with pytest.raises(HeadError) as refused:
        forward(headers, method=b"POST")
    assert refused.value.status == 400 and refused.value.reason == reason


def test_agreeing_duplicate_lengths_go_out_once_and_chunked_is_reframed() -> None:
    request = forward([(b"Host", b"a"), (b"Content-Length", b"5"), (b"Content-Length", b"5")], method=b"POST")
    assert header_lines(request.forward).count(b"Content-Length: 5") == 1 and request.content_length == 5
    request = forward([(b"Host", b"a"), (b"Transfer-Encoding", b"Chunked")], method=b"POST")
    assert request.chunked and b"Transfer-Encoding: chunked" in header_lines(request.forward)


def test_request_targets_and_methods() -> None:
    with pytest.raises(HeadError) as refused:
        forward([(b"Host", b"a")], method=b"CONNECT", url=b"a:443")
    assert refused.value.status == 405
    with pytest.raises(HeadError):
        forward([(b"Host", b"a")], url=b"noslash")
    assert forward([(b"Host", b"a")], method=b"OPTIONS", url=b"*").path == b"*"
    assert forward([(b"Host", b"a")], url=b"/p/q?x=1").path == b"/p/q"
    assert forward([], http10=True).host == b"127.0.0.1:5006"  # HTTP/1.0 may omit Host


def test_websocket_upgrade_is_forwarded_as_an_upgrade() -> None:
    request = forward([(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                       (b"Sec-WebSocket-Protocol", b"bokeh, token")], upgrade=True)
    lines = header_lines(request.forward)
    assert request.websocket and b"Connection: upgrade" in lines and b"Upgrade: websocket" in lines
    assert b"Sec-WebSocket-Protocol: bokeh, token" in lines
    plain = forward([(b"Host", b"a"), (b"Upgrade", b"h2c"), (b"Connection", b"Upgrade")], upgrade=True)
    assert not plain.websocket and not any(b"pgrade" in line for line in header_lines(plain.forward))


def response(status: int, headers: list[tuple[bytes, bytes]], **options: bool) -> tuple[bytes, int]:
    settings = {"head_request": False, "http10_client": False, "keep_alive": True} | options
    head, framing, _ = response_head(status, b"", headers, set_cookie=b"Set-Cookie: fleet_affinity=w1", **settings)
    return head, framing


def test_response_framing() -> None:
    assert response(200, [(b"Content-Length", b"5")])[1] == LENGTH
    head, framing = response(200, [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")])
    assert framing == CHUNKED and b"Content-Length" not in head and head.count(b"Transfer-Encoding: chunked") == 1
    assert response(200, [])[1] == CHUNKED
    head, framing = response(200, [], http10_client=True)
    assert framing == UNTIL_CLOSE and b"Connection: close" in head
    assert response(304, [])[1] == NO_BODY and response(200, [(b"Content-Length", b"9")], head_request=True)[1] == NO_BODY


def test_response_hop_by_hop_cookie_and_upgrade() -> None:
    head, _ = response(200, [(b"Content-Length", b"1"), (b"Connection", b"close, X-Internal"),
                             (b"X-Internal", b"1"), (b"Keep-Alive", b"5")])
    assert b"X-Internal" not in head and b"Keep-Alive" not in head and b"Connection" not in head
    assert b"Set-Cookie: fleet_affinity=w1" in head and head.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _ = response(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                             (b"Sec-WebSocket-Accept", b"k")])
    assert b"Upgrade: websocket" in head and b"Connection: upgrade" in head and b"Set-Cookie" not in head
    head, _ = response(200, [(b"Content-Length", b"1")], keep_alive=False)
    assert b"Connection: close" in head


def test_error_response_is_complete_and_closes() -> None:
    answer = error_response(503, "no worker is ready", extra=b"Retry-After: 1\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable") and b"Retry-After: 1" in head
    assert b"Connection: close" in head and f"Content-Length: {len(body)}".encode() in head


@given(st.lists(st.tuples(st.sampled_from([b"Host", b"Connection", b"Upgrade", b"Cookie", b"X-A",
                                           b"Transfer-Encoding", b"Content-Length", b"TE"]),
                          st.binary(min_size=0, max_size=12).filter(lambda v: b"\r" not in v and b"\n" not in v)),
                max_size=8))
def test_any_head_is_either_refused_or_forwarded_without_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        request = forward(headers, method=b"POST")
    except HeadError as refused:
        assert refused.status in (400, 405)
        return
    lines = header_lines(request.forward)
    assert not any(line.lower().startswith((b"te:", b"upgrade:", b"connection:")) for line in lines)
    assert request.forward.endswith(b"\r\n\r\n")
    assert not (request.chunked and request.content_length is not None)


# -- the worker's head forwarded as its bytes (head.response_head_raw) ----------------------------
_NAMES = st.sampled_from([b"Server", b"Date", b"Content-Type", b"Content-Length", b"Connection",
                          b"connection", b"Keep-Alive", b"Transfer-Encoding", b"TE", b"Trailer", b"Upgrade",
                          b"Proxy-Connection", b"X-Foo", b"Set-Cookie", b"ETag", b"Teapot", b"Connectionx"])
_VALUES = st.sampled_from([b"keep-alive", b"Keep-Alive", b"close", b"close, x-foo", b"x-foo", b"chunked",
                           b"6", b"text/html", b"a=b", b"", b"upgrade", b"1"])


def llhttp_accepts(raw: bytes) -> bool:
    """Whether llhttp parses this head (the proxy only ever sees heads it accepted)."""
    class Sink:
        def on_headers_complete(self) -> None:
            pass
    try:
        httptools.HttpResponseParser(Sink()).feed_data(raw + b"\r\n\r\n")
    except httptools.HttpParserError:
        return False
    return True


@given(status_line=st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.0 200 OK",
                                    b"HTTP/1.1 200 ", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified"]),
       fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
       head_request=st.booleans(), http10_client=st.booleans(), keep_alive=st.booleans(),
       cookie=st.sampled_from([None, b"Set-Cookie: fleet_affinity=w1"]),
       extra=st.sampled_from([None, b"Strict-Transport-Security: max-age=60"]))
def test_raw_head_path_answers_what_the_field_by_field_path_does(
        status_line: bytes, fields: list[tuple[bytes, bytes]], head_request: bool, http10_client: bool,
        keep_alive: bool, cookie: bytes | None, extra: bytes | None) -> None:
    raw = b"\r\n".join([status_line, *(name + b": " + value for name, value in fields)])
    if not llhttp_accepts(raw):
        return
    status = int(status_line.split(b" ")[1])
    _, headers = split_head(raw)
    reason = status_line.split(b" ", 2)[2].strip()
    expected = response_head(status, reason, headers, head_request=head_request, http10_client=http10_client,
                             keep_alive=keep_alive, set_cookie=cookie, extra=extra)
    for _ in range(2):  # the second time from the cache of plain heads
        got = response_head_raw(raw, status, head_request, http10_client, keep_alive, cookie, extra)
        assert got[1:] == expected[1:]
        assert sorted(header_lines(got[0])) == sorted(header_lines(expected[0]))
        assert got[0].split(b"\r\n")[0] == expected[0].split(b"\r\n")[0]  # the status line
        assert got[0].endswith(b"\r\n\r\n")


def test_raw_head_drops_plain_connection_and_keeps_the_rest_in_order() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nServer: w\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n"
           b"Set-Cookie: a=1\r\nSet-Cookie: b=2")
    head, framing, until_close = response_head_raw(raw, 200, False, False, True, None, None)
    assert head == (b"HTTP/1.1 200 OK\r\nServer: w\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n"
                    b"Set-Cookie: b=2\r\n\r\n")
    assert (framing, until_close) == (LENGTH, False)


def test_raw_head_removes_fields_named_in_connection() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0"
    head, _, _ = response_head_raw(raw, 200, False, False, True, None, None)
    assert b"X-Secret" not in head and b"Content-Length: 0" in head


def test_raw_head_remembers_only_small_heads() -> None:
    from fleet.balancer import head
    small = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Small: 1"
    large = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Large: " + b"a" * 5000
    for raw in (small, large):
        out, framing, _ = response_head_raw(raw, 200, False, False, True, None, None)
        assert out == raw + b"\r\n\r\n" and framing == LENGTH
    assert small in head._PLAIN_HEADS and large not in head._PLAIN_HEADS
