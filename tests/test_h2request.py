"""The pure parts of HTTP/2: a stream's head as HTTP/1.1, the flood counters, the stream table."""

from __future__ import annotations

import pytest

from fleet.balancer.head import HeadError
from fleet.balancer.h2limits import H2Limits, RateWindow
from fleet.balancer.h2request import translate
from fleet.balancer.h2stream import TABLE, StreamState

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/x?y=1")]


def test_a_get_becomes_an_http11_head_with_host_from_authority() -> None:
    request = translate([*BASE, (b"cookie", b"a=1; b=2"), (b"accept", b"*/*")], end_stream=True)
    assert request.head == (b"GET /x?y=1 HTTP/1.1\r\nhost: a.test\r\ncookie: a=1; b=2\r\naccept: */*\r\n\r\n")
    assert not request.chunked and not request.websocket


def test_a_body_of_unknown_length_is_framed_chunked() -> None:
    request = translate([(b":method", b"POST"), *BASE[1:]], end_stream=False)
    assert request.chunked and request.head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    sized = translate([(b":method", b"POST"), *BASE[1:], (b"content-length", b"3")], end_stream=False)
    assert not sized.chunked


def test_extended_connect_becomes_a_websocket_upgrade() -> None:
    headers = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:],
               (b"sec-websocket-version", b"13"), (b"origin", b"https://a.test")]
    request = translate(headers, end_stream=False, key=b"dGhlIHNhbXBsZSBub25jZQ==")
    assert request.websocket and not request.chunked
    assert request.head.startswith(b"GET /x?y=1 HTTP/1.1\r\nhost: a.test\r\n")
    assert b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in request.head


@pytest.mark.parametrize("headers, end, status", [
    ([*BASE, (b"x-a", b"1\r\nx-injected: 1")], True, 400),
    ([*BASE, (b"x-a", b"1\nx")], True, 400),
    ([*BASE, (b"x-a", b"1\x00")], True, 400),
    ([(b":method", b"GET"), (b":path", b"/a b"), (b":authority", b"a.test")], True, 400),
    ([(b":method", b"GET"), (b":path", b"/a\r\nHost: evil"), (b":authority", b"a.test")], True, 400),
    ([(b":method", b"GET /x HTTP/1.1\r\n"), (b":path", b"/"), (b":authority", b"a.test")], True, 400),
    ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a.test\r\n")], True, 400),
    ([*BASE, (b"host", b"evil.test")], True, 400),
    ([(b":method", b"CONNECT"), (b":authority", b"a.test:443")], False, 405),
    ([(b":method", b"CONNECT"), (b":protocol", b"h3"), *BASE[1:]], False, 501),
    ([(b":method", b"CONNECT"), (b":protocol", b"websocket"), *BASE[1:]], True, 400),
    ([(b":method", b"GET"), (b":protocol", b"websocket"), *BASE[1:]], True, 400),
    ([(b":method", b"GET"), (b":authority", b"a.test")], True, 400),
])
def test_what_http11_could_not_carry_faithfully_is_refused(headers: list[tuple[bytes, bytes]], end: bool,
                                                           status: int) -> None:
    with pytest.raises(HeadError) as refused:
        translate(headers, end_stream=end)
    assert refused.value.status == status


def test_hop_by_hop_fields_are_not_passed_on_as_sent() -> None:
    request = translate([*BASE, (b"connection", b"close"), (b"transfer-encoding", b"chunked"),
                         (b"host", b"a.test")], end_stream=True)
    assert b"close" not in request.head and b"chunked" not in request.head
    assert request.head.count(b"host:") == 1


def test_rate_window_counts_per_window_with_the_time_passed_in() -> None:
    window = RateWindow(10.0, 3)
    assert not any(window.add(100.0 + i) for i in range(3))
    assert window.add(103.0)  # the fourth within 10 s
    assert not window.add(111.0)  # a new window


def test_header_list_bound_leaves_room_for_fleets_own_431() -> None:
    limits = H2Limits.for_headers(65536, 100)
    assert limits.header_list_size > 65536 + 32 * 100


def test_stream_table_walks() -> None:
    for source, target, allowed in TABLE.walk():
        assert allowed == (target in {
            StreamState.OPEN: {StreamState.RESPONDING, StreamState.TUNNEL, StreamState.ENDING, StreamState.CLOSED},
            StreamState.RESPONDING: {StreamState.ENDING, StreamState.CLOSED},
            StreamState.TUNNEL: {StreamState.ENDING, StreamState.CLOSED},
            StreamState.ENDING: {StreamState.CLOSED},
            StreamState.CLOSED: set(),
        }[source])


class FakeOwner:
    """What a stream asks of its connection, recorded (``h2stream.StreamOwner``)."""

    def __init__(self) -> None:
        self.loop = None  # used only to end a stream's ClientConnection: these streams have none
        self.transport = None
        self.peer, self.client_ip = "127.0.0.1", b"127.0.0.1"
        self.heads: list[tuple[list[tuple[bytes, bytes]], bool]] = []
        self.finished: list[object] = []
        self.resets: list[int] = []

    def send_head(self, stream: object, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.heads.append((headers, end))

    def pump(self, stream: object = None) -> None:
        pass

    def finish(self, stream: object) -> None:
        self.finished.append(stream)

    def reset(self, stream: object, code: int) -> None:
        self.resets.append(code)
        stream.closed()  # type: ignore[attr-defined]

    def deliver_held(self, stream: object) -> None:
        pass


def stream_for(head_request: bool = False, websocket: bool = False) -> tuple["FakeOwner", object]:
    from fleet.balancer.h2stream import StreamTransport
    owner = FakeOwner()
    return owner, StreamTransport(owner, 1, head_request, websocket, False)


def test_a_response_becomes_headers_without_connection_fields_and_data() -> None:
    owner, stream = stream_for()
    stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: b\r\n\r\nhel")  # type: ignore[attr-defined]
    stream.write(b"lo")  # type: ignore[attr-defined]
    assert owner.heads == [([(b":status", b"200"), (b"content-length", b"5"), (b"x-a", b"b")], False)]
    assert b"".join(stream.out) == b"hello" and stream.state is StreamState.ENDING  # type: ignore[attr-defined]


def test_a_chunked_response_is_unframed_and_a_head_response_ends_with_its_head() -> None:
    owner, stream = stream_for()
    stream.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")  # type: ignore[attr-defined]
    assert owner.heads[0][0] == [(b":status", b"200")] and b"".join(stream.out) == b"abc"  # type: ignore[attr-defined]
    owner, head = stream_for(head_request=True)
    head.write(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")  # type: ignore[attr-defined]
    assert owner.heads == [([(b":status", b"200"), (b"content-length", b"30")], True)] and owner.finished == [head]


def test_a_websocket_101_becomes_200_and_then_bytes() -> None:
    owner, stream = stream_for(websocket=True)
    stream.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"  # type: ignore[attr-defined]
                 b"Sec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: bokeh\r\n\r\n\x81\x02hi")
    assert owner.heads == [([(b":status", b"200"), (b"sec-websocket-protocol", b"bokeh")], False)]
    assert stream.state is StreamState.TUNNEL and b"".join(stream.out) == b"\x81\x02hi"  # type: ignore[attr-defined]
    stream.write(b"more")  # type: ignore[attr-defined]
    assert stream.out[-1] == b"more"  # type: ignore[attr-defined]
    stream.close()  # type: ignore[attr-defined]
    assert stream.state is StreamState.ENDING and not owner.resets  # type: ignore[attr-defined]


def test_a_response_cut_short_is_reset_and_one_ending_with_its_connection_ends() -> None:
    owner, cut = stream_for()
    cut.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")  # type: ignore[attr-defined]
    cut.close()  # type: ignore[attr-defined]
    assert owner.resets == [0x2]
    owner, unframed = stream_for()
    unframed.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")  # type: ignore[attr-defined]
    unframed.close()  # type: ignore[attr-defined]
    assert not owner.resets and unframed.state is StreamState.ENDING  # type: ignore[attr-defined]
