"""HTTP/2's own attacks on real sockets: each is answered at a bounded cost with a clear error
code, counted in ``fleet_client_errors_total{reason}``, while the proxy keeps serving another
client on another connection (``balancer.h2limits`` names the bounds)."""

from __future__ import annotations

import collections
import struct
import time
from typing import Iterator

import hpack
import pytest

from h2_drill import hostile_cases, send_case
from h2client import H2Client, frame
from support import free_port
from test_balancer import BACKEND
from test_drills import RECORDER, received
from test_edge_tls import make_cert
from up_helpers import Fleet, up

PROTOCOL_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x1, 0x8, 0xB
HEADERS, SETTINGS, PING, WINDOW_UPDATE, CONTINUATION, RST_STREAM = 0x1, 0x4, 0x6, 0x8, 0x9, 0x3
END_STREAM, END_HEADERS = 0x1, 0x4


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("h2attacks")
    cert, key = make_cert(tmp, "localhost")
    port = free_port()
    started = up(tmp, BACKEND, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                 "--client-timeout", "2", "--header-timeout", "2", "--upstream-timeout", "10",
                 workers=2, proxy=True, port=port, env={"FLEET_METRICS_TTL": "0"})
    with started.proc:
        started.proc.wait_for_output(r"ready: open", timeout=60)
        yield started


def client_errors(port: int, reason: str) -> float:
    with H2Client(port) as client:
        body = client.get("/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(f'fleet_client_errors_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


def block(port: int, *extra: tuple[bytes, bytes]) -> bytes:
    """A request's header block from an encoder of its own (literal or static fields only
    refer to nothing in the server's dynamic table, so it decodes whatever came before)."""
    return hpack.Encoder().encode([(b":method", b"GET"), (b":scheme", b"https"),
                                   (b":authority", b"127.0.0.1:%d" % port), (b":path", b"/"), *extra])


def goaway_code(client: H2Client, timeout: float = 10.0) -> int | None:
    client.wait(lambda: client.goaway is not None or client.closed, timeout)
    return client.goaway.error_code if client.goaway is not None else None


def keeps_serving(fleet: Fleet, other: H2Client) -> None:
    """The client that was not attacking, on its own connection, is still answered (unless it
    sat idle past --client-timeout: then its GOAWAY said NO_ERROR), and so is a new one."""
    reply = other.get("/")
    assert reply.status == 200 or (other.goaway is not None and other.goaway.error_code == 0)
    with H2Client(fleet.port) as fresh:
        assert fresh.get("/").status == 200


def write_until_closed(client: H2Client, frames: Iterator[bytes]) -> int:
    sent = 0
    for data in frames:
        try:
            client.raw(data)
        except OSError:
            break
        sent += 1
    return sent


def test_rapid_reset_gets_goaway_enhance_your_calm(fleet: Fleet) -> None:
    before = client_errors(fleet.port, "h2_rapid_reset")
    with H2Client(fleet.port) as other, H2Client(fleet.port) as attacker:
        started = time.monotonic()
        for _ in range(400):
            try:
                stream_id = attacker.headers("/slow?seconds=5")
                attacker.conn.reset_stream(stream_id)
                attacker.flush()
            except OSError:
                break
        assert goaway_code(attacker) == ENHANCE_YOUR_CALM
        assert time.monotonic() - started < 10
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_rapid_reset") == before + 1


def test_continuation_flood_is_cut_at_a_bounded_header_block(fleet: Fleet) -> None:
    with H2Client(fleet.port) as other, H2Client(fleet.port) as attacker:
        start = block(fleet.port)
        frames = iter([frame(HEADERS, 0, 1, start), *(frame(CONTINUATION, 0, 1, b"\x00" * 16000)
                                                     for _ in range(500))])
        sent = write_until_closed(attacker, frames)
        assert goaway_code(attacker) == PROTOCOL_ERROR  # after 64 frames: the rest is not read
        assert sent >= 65
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_continuation_flood") >= 1


def test_a_header_block_that_never_ends_is_closed_by_the_idle_timeout(fleet: Fleet) -> None:
    with H2Client(fleet.port) as attacker:
        attacker.raw(frame(HEADERS, 0, 1, block(fleet.port)))
        started = time.monotonic()
        for _ in range(20):  # a trickle: one small CONTINUATION every half second
            try:
                attacker.raw(frame(CONTINUATION, 0, 1, b""))
            except OSError:
                break
            attacker.wait(lambda: attacker.closed, 0.5)
            if attacker.closed:
                break
        assert attacker.closed
        assert time.monotonic() - started < 8  # --client-timeout 2, swept once a second


def test_hpack_bomb_is_refused_by_its_decoded_size(fleet: Fleet) -> None:
    bomb = block(fleet.port, *[(b"x-bomb", b"b" * 4000)] * 200)  # 4 KB indexed once, named 200 times
    assert len(bomb) < 6000
    with H2Client(fleet.port) as other, H2Client(fleet.port) as attacker:
        attacker.raw(frame(HEADERS, END_HEADERS | END_STREAM, 1, bomb))
        assert goaway_code(attacker) == ENHANCE_YOUR_CALM
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_header_list_too_large") >= 1


@pytest.mark.parametrize("kind, payload", [
    ("settings", b""),
    ("ping", b"12345678"),
    ("window_update", struct.pack(">I", 1)),
])
def test_control_frame_floods_get_goaway_enhance_your_calm(fleet: Fleet, kind: str, payload: bytes) -> None:
    code = {"settings": SETTINGS, "ping": PING, "window_update": WINDOW_UPDATE}[kind]
    with H2Client(fleet.port) as other, H2Client(fleet.port) as attacker:
        sent = write_until_closed(attacker, (frame(code, 0, 0, payload) for _ in range(3000)))
        assert goaway_code(attacker) == ENHANCE_YOUR_CALM
        assert sent >= 1000
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_control_flood") >= 1


def test_streams_past_the_advertised_limit_break_the_connection_not_the_proxy(fleet: Fleet) -> None:
    with H2Client(fleet.port) as other, H2Client(fleet.port) as attacker:
        assert attacker.wait(lambda: 3 in attacker.remote_settings)
        assert attacker.remote_settings[3] == 100  # SETTINGS_MAX_CONCURRENT_STREAMS
        for _ in range(100):
            attacker.headers("/slow?seconds=4")
        attacker.raw(frame(HEADERS, END_HEADERS | END_STREAM, 201, block(fleet.port)))
        assert goaway_code(attacker) == PROTOCOL_ERROR
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_too_many_streams") >= 1


def test_a_window_never_opened_ends_the_stream_after_the_client_timeout(fleet: Fleet) -> None:
    before = client_errors(fleet.port, "h2_stalled_window")
    with H2Client(fleet.port) as other, H2Client(fleet.port, settings={4: 0}) as stalled:  # INITIAL_WINDOW_SIZE 0
        started = time.monotonic()
        stream_id = stalled.headers("/download?mb=2")
        reply = stalled.response(stream_id, timeout=15)
        assert reply.reset == CANCEL and reply.body == b""
        assert 2 <= time.monotonic() - started < 8
        keeps_serving(fleet, other)
    assert client_errors(fleet.port, "h2_stalled_window") == before + 1


def test_an_idle_connection_gets_goaway_and_is_closed(fleet: Fleet) -> None:
    with H2Client(fleet.port) as idle:
        assert idle.get("/").status == 200
        started = time.monotonic()
        assert idle.wait(lambda: idle.closed, 10)
        assert idle.goaway is not None and idle.goaway.error_code == 0
        assert time.monotonic() - started < 6


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("h2drill")
    cert, key = make_cert(tmp, "localhost")
    started = up(tmp, RECORDER, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--allow-host", "fuzz.test",
                 "--client-timeout", "2", "--header-timeout", "2", workers=2, proxy=True)
    with started.proc:
        started.proc.wait_for_output(r"ready: open", timeout=60)
        yield started


def test_h2_fuzz_drill_every_case_answered_and_nothing_refused_reaches_a_worker(recorder: Fleet) -> None:
    cases = hostile_cases(seed=20261207, count=90)
    outcomes: collections.Counter[str] = collections.Counter()
    for batch in range(0, len(cases), 30):
        for case in cases[batch:batch + 30]:
            outcome = send_case(recorder.port, case)
            outcomes[f"{case.kind}: {outcome.split()[0]}"] += 1
            assert outcome != "no answer", (case.kind, case.number)
            if case.refused:
                assert not outcome.startswith("status 2"), (case.kind, case.number, outcome)
        with H2Client(recorder.port) as normal:
            assert normal.get("/fz/ok", authority="fuzz.test").status == 200
    heads, complete = received(recorder, 2)
    refused = {b"/fz/%d.0" % case.number for case in cases if case.refused}
    assert not [uri for uri in complete if uri in refused]
    assert not [uri for uri in heads if uri.startswith(b"/smuggled/")]
    assert any(uri.startswith(b"/fz/") and uri.endswith(b".1") for uri in complete)  # smuggle cases' POSTs
    print("h2 fuzz drill:", dict(sorted(outcomes.items())))
