"""Connection edges on a real ``fleet up``: the proxy's default WebSocket origins, HTTP/1.0
keep-alive, half-closed connections both ways, and clients that reset mid-response (SIGPIPE)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import http_get, wait_until, websocket_upgrade
from up_helpers import Fleet, balance, up

APPS = Path(__file__).resolve().parent / "apps"


def raw(port: int, data: bytes, *, shut_write: bool = False, timeout: float = 10.0) -> bytes:
    """Send ``data``; read until the proxy closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return answer
            answer += chunk
        raise AssertionError(f"the proxy did not close within {timeout} s; got {answer[:200]!r}")


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = up(tmp_path_factory.mktemp("edges"), str(APPS / "backend.py"), workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        yield fleet


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = up(tmp_path_factory.mktemp("origin"), str(APPS / "header_echo.py"), workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        yield fleet


def received(port: int) -> list[str]:
    return json.loads(http_get(f"http://127.0.0.1:{port}/_received")[2])["received"]


def test_default_origin_is_the_proxys_own_address(echo: Fleet) -> None:
    """No --allow-websocket-origin: a foreign Origin gets 403 from the proxy and never reaches
    the worker (whose check_origin would accept anything); the proxy's own address gets 101."""
    for evil in ("http://evil", "http://evil.example:80", f"http://localhost.evil:{echo.port}", "null"):
        answer = websocket_upgrade(echo.port, "/ws-evil", evil)
        assert answer.startswith(b"HTTP/1.1 403"), (evil, answer[:100])
    for own in (f"http://localhost:{echo.port}", f"http://127.0.0.1:{echo.port}"):
        assert websocket_upgrade(echo.port, "/ws-own", own).startswith(b"HTTP/1.1 101"), own
    seen = received(echo.port)
    assert "/ws-own" in seen and "/ws-evil" not in seen


def test_http10_without_keep_alive_closes_after_the_answer(backend: Fleet) -> None:
    answer = raw(backend.port, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and b"hello from" in answer
    assert b"connection: keep-alive" not in answer.lower()


def test_http10_keep_alive_keeps_the_connection_and_frames_the_answer(backend: Fleet) -> None:
    with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            head, body = read_response(sock)
            assert b" 200 " in head.split(b"\r\n")[0] and body.startswith(b"hello from")
            assert b"connection: keep-alive" in head.lower()
            assert b"transfer-encoding" not in head.lower()  # an HTTP/1.0 client cannot read chunks


def test_http10_keep_alive_with_an_unframed_answer_ends_in_close(backend: Fleet) -> None:
    """A body with neither length nor chunks can only end with the connection."""
    answer = raw(backend.port, b"GET /unframed HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    assert answer.endswith(b"u" * 5000)
    answer = raw(backend.port, b"GET /download?mb=0.1&chunked=1 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == b"x" * int(0.1 * 2**20)


def test_client_half_close_still_gets_the_whole_answer(backend: Fleet) -> None:
    answer = raw(backend.port, b"GET /slow?seconds=0.5 HTTP/1.1\r\nHost: x\r\n\r\n", shut_write=True)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"slow from g1w0\n")
    answer = raw(backend.port, b"GET /download?mb=2 HTTP/1.1\r\nHost: x\r\n\r\n", shut_write=True)
    assert answer.partition(b"\r\n\r\n")[2] == b"x" * 2**21


def test_clients_resetting_mid_response_break_nothing(backend: Fleet) -> None:
    """SIGPIPE/EPIPE/ECONNRESET on the client side: the proxy lives on and serves."""
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
        sock.sendall(b"GET /download?mb=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST with most of the answer unsent
    assert backend.proc.proc.poll() is None
    assert http_get(f"http://127.0.0.1:{backend.port}/")[0] == 200
    wait_until(lambda: all(w["state"] == "ready" for w in backend.status()["workers"]), timeout=10)
    # Nothing is left in flight towards the worker.
    wait_until(lambda: all(w.get("active_requests", 0) == 0 for w in backend.status()["workers"]), timeout=15)


class HalfClosingWorker:
    """A raw HTTP server that answers without a length, shuts its write side and keeps its
    socket open: the proxy must end the answer at the worker's FIN, not at its close."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            try:
                if b"\r\n\r\n" not in data:
                    raise OSError("no request (a health check's connect)")
                # Held before the answer goes out: the client may read it all and look at
                # ``held`` before this thread runs again.
                self.held.append(conn)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"h" * 3000)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                if conn in self.held:
                    self.held.remove(conn)
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.listener.close()


def test_worker_half_close_ends_the_answer() -> None:
    worker = HalfClosingWorker()
    try:
        proc, port = balance(f"127.0.0.1:{worker.port}")
        with proc:
            started = time.monotonic()
            answer = raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
            head, _, body = answer.partition(b"\r\n\r\n")
            # Re-framed for the HTTP/1.1 client: chunks, ended by the last chunk at the FIN.
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
            assert body.endswith(b"\r\n0\r\n\r\n") and body.count(b"h") == 3000
            assert time.monotonic() - started < 5
            assert worker.held  # the worker's socket was still open when the answer ended
    finally:
        worker.close()


def test_default_origins_name_the_proxys_own_addresses() -> None:
    from fleet.balancer.allow import Allowlist
    from fleet.balancer.context import default_origins

    local = Allowlist(default_origins("0.0.0.0", 8000))
    assert local.allows_origin(b"http://localhost:8000") and local.allows_origin(b"https://127.0.0.1:8000")
    assert not local.allows_origin(b"http://evil:8000") and not local.allows_origin(b"http://localhost:8001")
    public = Allowlist(default_origins("app.example.com", 443))
    assert public.allows_origin(b"https://app.example.com")  # the browser leaves :443 out
    assert public.allows_origin(b"https://app.example.com:443")
    assert not public.allows_origin(b"https://evil.example.com")
    assert Allowlist(default_origins("fe80::2", 8000)).allows_origin(b"http://[fe80::2]:8000")
