"""The built-in proxy end to end: ``fleet up tests/apps/backend.py -n 3`` on free ports, real
clients on real sockets. One fleet serves the whole module (its workers are never broken here;
tests that kill or scale workers start their own)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import websocket

from support import wait_until
from up_helpers import Fleet, up

BACKEND = str(Path(__file__).parent / "apps" / "backend.py")
MIB = 2**20


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("balancer")
    started = up(tmp, BACKEND, "--max-body-size", "300MiB", "--upstream-timeout", "2",
                 "--header-timeout", "2", "--client-timeout", "3", "--max-header-size", "64KiB",
                 workers=3, proxy=True)
    with started.proc:
        started.proc.wait_for_output(r"ready: open", timeout=60)
        yield started


def get(port: int, path: str = "/", headers: dict[str, str] | None = None,
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def worker_of(body: bytes) -> str:
    return body.split()[2].decode()  # "hello from g1w1 on port ..."


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and read until the proxy closes the connection (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def proxy_rss(fleet: Fleet) -> int:
    return psutil.Process(fleet.proc.pid).memory_info().rss


def ws_connect(port: int, cookie: str | None = None, **options: Any) -> websocket.WebSocket:
    headers = [f"Cookie: fleet_affinity={cookie}"] if cookie else []
    return websocket.create_connection(f"ws://127.0.0.1:{port}/ws", header=headers, timeout=10, **options)


# -- choosing a worker ---------------------------------------------------------------------------

def test_requests_avoid_the_worker_held_busy_by_slow_requests(fleet: Fleet) -> None:
    results: list[tuple[int, dict[str, str], bytes]] = []
    # Held by event streams (head at once, an event every 1.5 s for 6 s), not by a slow head:
    # the module's --upstream-timeout of 2 s must not race with how long they are held.
    holders = [threading.Thread(target=lambda: results.append(
        get(fleet.port, "/sse?n=4&gap=1.5", {"Cookie": "fleet_affinity=g1w0"}))) for _ in range(3)]
    for thread in holders:
        thread.start()
    wait_until(lambda: fleet.worker("g1w0")["connections"] == 3, 10, message="3 held requests on g1w0")
    seen = [worker_of(get(fleet.port)[2]) for _ in range(12)]
    assert fleet.worker("w0")["connections"] == 3, "the held requests ended before the check was over"
    for thread in holders:
        thread.join(timeout=15)
    assert "g1w0" not in seen and set(seen) == {"g1w1", "g1w2"}, seen
    assert [r[0] for r in results] == [200, 200, 200]
    assert all(r[2].count(b"data: event") == 4 for r in results), results


def test_new_websockets_go_to_workers_with_fewer_open_ones(fleet: Fleet) -> None:
    pinned = [ws_connect(fleet.port, cookie="g1w0") for _ in range(4)]
    try:
        for sock in pinned:
            sock.send("pin")
            assert sock.recv() == "g1w0: pin"
        wait_until(lambda: fleet.worker("g1w0")["connections"] == 4, 10, message="4 websockets on w0")
        fresh = [ws_connect(fleet.port) for _ in range(4)]
        try:
            owners = []
            for sock in fresh:
                sock.send("hi")
                owners.append(sock.recv().split(":")[0])
            assert sorted(owners) == ["g1w1", "g1w1", "g1w2", "g1w2"], owners
        finally:
            for sock in fresh:
                sock.close()
    finally:
        for sock in pinned:
            sock.close()
    wait_until(lambda: all(w["connections"] == 0 for w in fleet.status()["workers"]), 10,
               message="websocket gauge back to 0 after both sides closed")


def test_sticky_cookie_pins_a_client_and_a_bad_cookie_is_reassigned(fleet: Fleet) -> None:
    status, headers, body = get(fleet.port)
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"fleet_affinity={worker_of(body)};") and "HttpOnly" in cookie
    pinned = worker_of(body)
    for _ in range(10):
        status, headers, body = get(fleet.port, headers={"Cookie": f"a=1; fleet_affinity={pinned}; b=2"})
        assert worker_of(body) == pinned and "set-cookie" not in headers
    status, headers, body = get(fleet.port, headers={"Cookie": "fleet_affinity=g1w9"})
    assert status == 200 and headers["set-cookie"].startswith(f"fleet_affinity={worker_of(body)};")


# -- HTTP/1.1 semantics ------------------------------------------------------------------------

def test_keep_alive_client_uses_pooled_connections_to_workers(fleet: Fleet) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
    try:
        for _ in range(60):
            connection.request("GET", "/")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
    finally:
        connection.close()
    ports = {fleet.base_port + i for i in range(3)}
    to_workers = [c for c in psutil.Process(fleet.proc.pid).net_connections("tcp")
                  if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED]
    assert 1 <= len(to_workers) <= 3, to_workers  # one pooled connection per worker, reused


def test_pipelined_requests_are_answered_in_order(fleet: Fleet) -> None:
    head = "GET {} HTTP/1.1\r\nHost: test\r\nCookie: fleet_affinity=g1w1\r\n\r\n"
    data = (head.format("/slow?seconds=0.3") + head.format("/") + head.format("/headers")
            + "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").encode()
    answer = raw(fleet.port, data)
    assert answer.count(b"HTTP/1.1 200 OK") == 4
    first, second, third = answer.find(b"slow from g1w1"), answer.find(b"hello from g1w1"), answer.find(b'"worker": "g1w1"')
    assert 0 < first < second < third, answer[:500]


def test_connection_close_and_http10(fleet: Fleet) -> None:
    answer = raw(fleet.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer and b"hello from" in answer
    answer = raw(fleet.port, b"GET / HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\n") and b"hello from" in answer
    # An HTTP/1.0 client asking for keep-alive gets it, with a length it can frame.
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and response.getheader("Connection") == "keep-alive"
            assert b"hello from" in response.read()
    # An unframed worker response reaches an HTTP/1.1 client chunked, and a 1.0 client until close.
    status, headers, body = get(fleet.port, "/unframed")
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and body == b"u" * 5000
    answer = raw(fleet.port, b"GET /unframed HTTP/1.0\r\n\r\n")
    assert answer.endswith(b"\r\n\r\n" + b"u" * 5000)


def test_head_request_and_forwarding_headers(fleet: Fleet) -> None:
    answer = raw(fleet.port, b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 200") == 2
    status, _, body = get(fleet.port, "/headers", {
        "Host": "example.test:8080", "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6",
        "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Connection": "keep-alive", "X-Custom": "kept"})
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["host"] == "example.test:8080"
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == "example.test:8080"
    assert seen["x-custom"] == "kept"
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection"):
        assert hop not in seen, hop
    assert json.loads(body)["remote_ip"] == "127.0.0.1"


# -- streaming and back-pressure ---------------------------------------------------------------

def test_200mb_download_to_a_slow_reader_keeps_proxy_memory_bounded(fleet: Fleet) -> None:
    before = proxy_rss(fleet)
    peak = before
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /download?mb=200 HTTP/1.1\r\nHost: t\r\n\r\n")
        received = len(sock.recv(65536))
        time.sleep(2.0)  # a stalled reader: without back-pressure the proxy would buffer it all
        peak = max(peak, proxy_rss(fleet))
        total = 200 * MIB
        while received < total:
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed early"
            received += len(chunk)
            if received % (16 * MIB) < len(chunk):
                peak = max(peak, proxy_rss(fleet))
                time.sleep(0.05)
    assert received >= total
    growth = peak - before
    assert growth < 16 * MIB, f"proxy RSS grew {growth / MIB:.1f} MiB"


def test_200mb_chunked_upload_streams_to_the_worker(fleet: Fleet) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()
    for _ in range(3200):
        digest.update(piece)
    before = proxy_rss(fleet)

    def body() -> Iterator[bytes]:
        for _ in range(3200):
            yield piece

    connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=60)
    try:
        connection.request("POST", "/upload", body=body(), encode_chunked=True,
                           headers={"Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        result = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200
    assert result["size"] == 200 * MIB and result["sha256"] == digest.hexdigest()
    assert proxy_rss(fleet) - before < 16 * MIB


def test_server_sent_events_arrive_one_by_one(fleet: Fleet) -> None:
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /sse?n=3&gap=0.6 HTTP/1.1\r\nHost: t\r\n\r\n")
        buffer = b""
        arrivals = []
        while len(arrivals) < 3:
            chunk = sock.recv(4096)
            assert chunk
            buffer += chunk
            while f"data: event {len(arrivals)}".encode() in buffer:
                arrivals.append(time.monotonic() - start)
    assert arrivals[0] < 0.5 and arrivals[1] > 0.5 and arrivals[2] > 1.1, arrivals


# -- WebSocket -----------------------------------------------------------------------------

def test_websocket_with_a_48kib_head_relays_both_ways_until_closed(fleet: Fleet) -> None:
    protocol = "token." + "a" * (48 * 1024)
    sock = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/ws", timeout=10,
                                       header=[f"Sec-WebSocket-Protocol: {protocol}"])
    try:
        sock.send("hello")
        assert sock.recv().endswith(": hello")
        payload = bytes(range(256)) * 4096  # 1 MiB binary frame
        sock.send_binary(payload)
        assert sock.recv() == payload
    finally:
        sock.close()
    wait_until(lambda: all(w["connections"] == 0 for w in fleet.status()["workers"]), 10,
               message="tunnel closed on both sides")


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 419430400\r\n\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 400),  # a 4xx: the contract is no 5xx for bad input
    (b"GET /\r\nHost: t\r\n\r\n", 400),  # HTTP/0.9
])
def test_bad_requests_get_a_clear_status_and_the_proxy_keeps_serving(
        fleet: Fleet, request_bytes: bytes, status: int) -> None:
    answer = raw(fleet.port, request_bytes)
    assert answer and status_of(answer) == status, answer[:200]
    assert b"Connection: close" in answer
    assert get(fleet.port)[0] == 200


def test_idle_and_slow_clients_are_closed(fleet: Fleet) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        assert sock.recv(65536) == b""  # closed by the proxy after --client-timeout 3
    assert 2.5 < time.monotonic() - start < 6
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as sock:
        closed = False
        for byte in b"GET / HTTP/1.1\r\nHost: slowloris\r\nX-A: " + b"b" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - start > 5:
                break
        if not closed:
            sock.settimeout(5)
            try:
                closed = sock.recv(100) == b""
            except ConnectionResetError:
                closed = True
    assert closed and time.monotonic() - start < 6  # --header-timeout 2 (+ the 1 s sweep)
    assert get(fleet.port)[0] == 200


def test_no_response_head_within_upstream_timeout_is_504(fleet: Fleet) -> None:
    start = time.monotonic()
    status, _, body = get(fleet.port, "/hang")
    assert status == 504 and b"did not answer" in body
    assert 1.9 < time.monotonic() - start < 4.5
