"""The proxy's smuggling and denial-of-service holes, each reproduced on real sockets
against a real ``fleet``: Upgrade smuggling, built-in routes, chunked trailers, the limits, and
lingering close. The recorder app (tests/apps/recorder.py) tells what reached a worker."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from support import FRESH_METRICS, FleetProcess, free_port, start_fleet, wait_until
from up_helpers import Fleet, balance as start_balance, workers_without_proxy

APPS = Path(__file__).resolve().parent / "apps"
RECORDER = str(APPS / "recorder.py")
BACKEND = str(APPS / "backend.py")
WS_HEAD = (b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module")
def recorders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One recorder worker without fleet's proxy: each test puts its own ``fleet balance`` in front."""
    with workers_without_proxy(tmp_path_factory.mktemp("recorders"), RECORDER) as started:
        yield started


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("backends"), BACKEND) as started:
        yield started


def balance(target: Fleet, *options: str, env: dict[str, str] | None = None) -> tuple[FleetProcess, int]:
    return start_balance(f"127.0.0.1:{target.base_port}", *options, env=env)


def exchange(port: int, data: bytes, timeout: float = 5.0, read_for: float | None = None) -> bytes:
    """Send ``data``; read until the proxy closes (or ``read_for`` seconds of reading)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + (read_for if read_for is not None else timeout)
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def statuses(response: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"(?:^|\n)HTTP/1\.1 (\d{3}) ", response)]


def received(recorder: Fleet) -> tuple[list[str], list[str]]:
    with socket.create_connection(("127.0.0.1", recorder.base_port), timeout=5) as sock:
        sock.sendall(b"GET /_received HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    log = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return log["heads"], log["complete"]


def get(port: int, path: str = "/", extra: bytes = b"") -> bytes:
    return exchange(port, b"GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n" % (path.encode(), extra))


def samples(port: int) -> dict[str, float]:
    """/metrics of a proxy started with ``FRESH_METRICS``: rendered after the test's last act."""
    body = get(port, "/metrics").split(b"\r\n\r\n", 1)[1].decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# -- (1) Upgrade smuggling -------------------------------------------------------------------------

def test_bytes_after_an_upgrade_head_never_reach_the_worker_when_it_does_not_answer_101(recorders: Fleet) -> None:
    proc, port = balance(recorders)
    with proc:
        smuggled = b"GET /smuggled/upgrade HTTP/1.1\r\nHost: t\r\n\r\n"
        post = b"POST /smuggled/post HTTP/1.1\r\nHost: t\r\nContent-Length: 120\r\n\r\n"
        response = exchange(port, WS_HEAD % b"/page" + smuggled + post)
        assert statuses(response) == [200] and b"Connection: close" in response  # the page, then close
        # The next client's request is its own, not the body of a smuggled POST.
        for _ in range(5):
            assert statuses(get(port, "/next", b"Cookie: secret=1\r\n")) == [200]
        heads, complete = received(recorders)
        assert "/page" in heads and heads.count("/next") >= 5
        assert not [uri for uri in heads + complete if uri.startswith("/smuggled/")]


def test_only_get_may_upgrade(recorders: Fleet) -> None:
    proc, port = balance(recorders)
    with proc:
        head = (b"POST /smuggled/viapost HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Content-Length: 0\r\n\r\n")
        assert statuses(exchange(port, head)) == [400]
        assert "/smuggled/viapost" not in received(recorders)[0]


def test_frames_sent_with_the_upgrade_head_arrive_after_the_101(backends: Fleet) -> None:
    proc, port = balance(backends)
    with proc:
        payload = b"early"
        mask = os.urandom(4)
        frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        response = exchange(port, WS_HEAD % b"/ws" + frame, read_for=2.0)
        assert response.startswith(b"HTTP/1.1 101")
        assert b"w0: early" in response


# -- (2) built-in routes ---------------------------------------------------------------------------

def test_builtin_routes_answer_404_outside_metrics_allow_and_never_reach_a_worker(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--metrics-allow", "10.0.0.0/8")
    with proc:
        for path in ("/metrics", "/_fleet/status", "/_fleet/"):
            response = get(port, path)
            assert statuses(response) == [404] and b"fleet_" not in response
        heads, _ = received(recorders)
        assert "/metrics" not in heads and not [uri for uri in heads if uri.startswith("/_fleet")]
    proc, port = balance(recorders)  # default: loopback and private networks
    with proc:
        assert b"fleet_requests_total" in get(port, "/metrics")
        assert statuses(get(port, "/_fleet/unknown")) == [404]


def test_behind_a_trusted_proxy_metrics_allow_judges_the_forwarded_client(recorders: Fleet) -> None:
    # fleet behind an ingress on loopback: every connection comes from a private address, so
    # the rule must look at the client the ingress names, or /metrics would be public.
    proc, port = balance(recorders, "--trusted-proxy", "127.0.0.0/8")
    with proc:
        public = get(port, "/metrics", b"X-Forwarded-For: 203.0.113.9\r\n")
        assert statuses(public) == [404] and b"fleet_" not in public
        assert b"fleet_requests_total" in get(port, "/metrics", b"X-Forwarded-For: 10.1.2.3\r\n")
    proc, port = balance(recorders)  # no trusted proxy: a client's own claim changes nothing
    with proc:
        assert b"fleet_requests_total" in get(port, "/metrics", b"X-Forwarded-For: 203.0.113.9\r\n")


def test_pipelined_metrics_requests_are_each_answered_in_order_and_cheaply(recorders: Fleet) -> None:
    proc, port = balance(recorders)
    with proc:
        count = 1500
        began = time.monotonic()
        response = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n" * count
                            + b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", timeout=30)
        took = time.monotonic() - began
        assert statuses(response) == [200] * (count + 1)
        assert response.count(b"# TYPE fleet_requests_total counter") == count
        assert response.rstrip().endswith(b"ok from g1w0")
        assert took < 10, took  # rendered once a second, not 1,500 times (each walks psutil)


# -- (3) trailers, and no exchange without a timeout -----------------------------------------------

def test_oversized_trailers_get_431_and_the_request_is_not_left_in_flight(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--max-trailer-size", "8KiB", env=FRESH_METRICS)
    with proc:
        trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 1000) for i in range(70))
        body = b"POST /smuggled/trailers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        began = time.monotonic()
        response = exchange(port, body + trailers + b"\r\n", timeout=10)
        assert statuses(response) == [431] and time.monotonic() - began < 5
        wait_until(lambda: samples(port).get('fleet_active_requests{worker="b0"}')
                   == 0.0, 5, message="no request left in flight")
        assert "/smuggled/trailers" not in received(recorders)[1]
        small = body + b"X-Checksum: abc\r\n\r\n"
        assert statuses(exchange(port, small.replace(b"/smuggled/trailers", b"/small-trailers"))) == [200]


# -- (5) limits --------------------------------------------------------------------------------------

def test_more_than_max_header_count_fields_get_431(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--max-header-count", "100")
    with proc:
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(98))  # + Host, Connection = 100
        assert statuses(get(port, "/hundred", fields)) == [200]
        assert statuses(get(port, "/smuggled/many", fields + b"X-One-More: v\r\n")) == [431]
        assert "/smuggled/many" not in received(recorders)[0]


def test_past_max_connections_the_proxy_stops_accepting_and_resumes_below_it(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--max-connections", "3")
    with proc:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            for sock in held:
                sock.sendall(b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            late = socket.create_connection(("127.0.0.1", port), timeout=5)  # the backlog takes it
            with late:
                late.sendall(b"GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                late.settimeout(1.0)
                with pytest.raises(socket.timeout):
                    late.recv(65536)  # not accepted, so not answered (and not refused either)
                held.pop().close()
                late.settimeout(5.0)
                assert late.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()


def test_connections_past_max_connections_per_ip_are_closed(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--max-connections-per-ip", "2")
    with proc:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
                try:
                    third.sendall(b"GET /smuggled/third HTTP/1.1\r\nHost: t\r\n\r\n")
                    assert third.recv(65536) == b""
                except ConnectionResetError:
                    pass
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: statuses(get(port)) == [200], 5, message="a fresh connection is served")
        assert "/smuggled/third" not in received(recorders)[0]


def test_an_idle_websocket_is_closed_after_websocket_idle_timeout(backends: Fleet) -> None:
    proc, port = balance(backends, "--websocket-idle-timeout", "2")
    with proc:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(WS_HEAD % b"/ws")
            assert sock.recv(65536).startswith(b"HTTP/1.1 101")
            began = time.monotonic()
            while sock.recv(65536):
                pass
            assert 1.5 < time.monotonic() - began < 5


def test_a_body_trickled_below_min_body_rate_gets_408(recorders: Fleet) -> None:
    proc, port = balance(recorders, "--client-timeout", "2", "--min-body-rate", "100")
    with proc:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /smuggled/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
            began = time.monotonic()
            answer = b""
            sock.settimeout(0.4)
            while time.monotonic() - began < 8 and not answer:
                try:
                    sock.sendall(b"x")  # 1 byte every 0.4 s: never 2 s without a byte
                    answer = sock.recv(65536)
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert "/smuggled/slow" not in received(recorders)[1]


def test_pipelined_uploads_behind_a_stalled_request_hold_at_most_max_buffered_request(backends: Fleet) -> None:
    proc, port = balance(backends, "--max-buffered-request", "256KiB", "--upstream-timeout", "30")
    with proc:
        proxy = psutil.Process(proc.pid)
        before = proxy.memory_info().rss
        body = b"p" * 250_000
        upload = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /slow?seconds=6 HTTP/1.1\r\nHost: t\r\n\r\n")
            sock.setblocking(False)
            pushed = 0
            data = upload * 60  # 15 MB behind the stalled request
            deadline = time.monotonic() + 3
            while pushed < len(data) and time.monotonic() < deadline:
                try:
                    pushed += sock.send(data[pushed:pushed + 65536])
                except BlockingIOError:
                    time.sleep(0.05)
            grown = proxy.memory_info().rss - before
            assert pushed < len(data)  # the proxy stopped reading
            assert grown < 6 * 2**20, grown  # was 14.3 MiB


# -- (9) lingering close ---------------------------------------------------------------------------

def test_a_200k_head_gets_its_431_not_a_reset(recorders: Fleet) -> None:
    proc, port = balance(recorders)
    with proc:
        for _ in range(3):
            head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n"
            response = b""
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                try:
                    sock.sendall(head)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                while chunk := sock.recv(65536):
                    response += chunk
            assert response.startswith(b"HTTP/1.1 431"), response[:100]


# -- the queue and the per-worker cap -------------------------------------------------------

def test_a_request_waits_in_the_queue_for_a_worker_then_gets_503_after_queue_timeout() -> None:
    dead = free_port()
    port = free_port()
    with start_fleet("balance", f"127.0.0.1:{dead}", "--port", str(port), "--queue-timeout", "1.5",
                     env=FRESH_METRICS) as proc:
        proc.wait_for_output(r"fleet \S+ balance \(pid", timeout=30)
        began = time.monotonic()
        response = get(port)
        assert statuses(response) == [503] and b"Retry-After: 1" in response
        assert 1.0 < time.monotonic() - began < 4
        metrics = samples(port)
        assert metrics["fleet_queue_wait_seconds_count"] == 1 and metrics["fleet_queue_length"] == 0


def test_requests_past_worker_max_conns_queue_and_are_all_served(backends: Fleet) -> None:
    proc, port = balance(backends, "--worker-max-conns", "1", env=FRESH_METRICS)
    with proc:
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(get(port, "/slow?seconds=0.5")))
                   for _ in range(4)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert [statuses(r) for r in results] == [[200]] * 4
        assert time.monotonic() - began >= 1.9  # one at a time on the one worker
        wait_until(lambda: samples(port)["fleet_queue_wait_seconds_count"] >= 3, 5, message="queued requests counted")
