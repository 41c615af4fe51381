"""The proxy when things go wrong: workers that die, refuse connections or are gone, and
``fleet balance`` in front of servers fleet does not run (health-probed, dead ones skipped).

Backends are real servers: ``fleet up --no-proxy tests/apps/backend.py`` or
``python -m http.server``; the proxy under test is a real ``fleet`` process."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from support import (
    FRESH_METRICS, FleetProcess, free_port, require_tool, start_fleet, tls_over_unix_socket, wait_until,
)
from test_balancer import BACKEND, get, raw, status_of, worker_of, ws_connect
from up_helpers import Fleet, up, workers_without_proxy


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two supervised backend servers without fleet's proxy (the servers ``fleet balance`` fronts)."""
    with workers_without_proxy(tmp_path_factory.mktemp("backends"), BACKEND, workers=2) as started:
        yield started


def balance(*targets: str, options: tuple[str, ...] = ()) -> tuple[FleetProcess, int]:
    port = free_port()
    # FRESH_METRICS: scrape() reads counters right after the test acted.
    proc = start_fleet("balance", *targets, "--port", str(port), *options, env=FRESH_METRICS)
    proc.wait_for_output(r"fleet \S+ balance \(pid", timeout=30)
    return proc, port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_balance_skips_a_dead_server_and_uses_it_once_it_answers(backends: Fleet, tmp_path: Path) -> None:
    dead = free_port()
    live = [f"127.0.0.1:{backends.base_port}", f"127.0.0.1:{backends.base_port + 1}"]
    proc, port = balance(*live, f"127.0.0.1:{dead}")
    with proc:
        assert "(2 up)" in proc.output()
        for _ in range(20):
            status, _, body = get(port)
            assert status == 200 and body.startswith(b"hello from g1w")
        (tmp_path / "index.html").write_text("late server\n")
        late = subprocess.Popen([sys.executable, "-m", "http.server", str(dead), "--bind", "127.0.0.1"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait_for_output(rf"b2 \(127\.0\.0\.1:{dead}\) is up", timeout=10)
            bodies = {get(port, headers={"Connection": "close"})[2] for _ in range(12)}
            assert b"late server\n" in bodies
        finally:
            late.terminate()
            late.wait(timeout=10)
        proc.wait_for_output(rf"b2 \(127\.0\.0\.1:{dead}\) is down", timeout=10)
        assert all(get(port)[0] == 200 for _ in range(10))
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_connect_error_marks_the_server_down_and_retries_elsewhere(backends: Fleet) -> None:
    blocker = socket.socket()  # accepts TCP probes, then refuses: bound but closed before use
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    flaky = blocker.getsockname()[1]
    proc, port = balance(f"127.0.0.1:{flaky}", f"127.0.0.1:{backends.base_port}")
    with proc:
        assert "(2 up)" in proc.output()
        blocker.close()  # now connections to it are refused until the next probe
        statuses = [get(port, headers={"Connection": "close"})[0] for _ in range(10)]
        assert statuses == [200] * 10
        samples = scrape(port)
        # Labelled with the opaque id of the first target, never its address.
        assert samples[("fleet_upstream_connect_errors_total", (("worker", "b0"),))] >= 1
        assert not any(f"127.0.0.1:{flaky}" in str(key) for key in samples)
        assert samples[("fleet_retries_total", ())] >= 1


def test_no_server_ready_is_503_with_retry_after() -> None:
    proc, port = balance(f"127.0.0.1:{free_port()}", options=("--queue-timeout", "0"))
    with proc:
        assert "(0 up)" in proc.output()
        status, headers, body = get(port)
        assert status == 503 and headers["retry-after"] == "1" and b"no worker" in body
        # Counted where a 5xx-ratio alert looks, under worker="none".
        assert scrape(port)[("fleet_requests_total", (("code", "503"), ("method", "GET"), ("worker", "none")))] == 1


def test_use_xheaders_trusts_and_extends_forwarding_headers(backends: Fleet) -> None:
    target = f"127.0.0.1:{backends.base_port}"
    sent = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "app.example.com", "X-Real-IP": "203.0.113.7"}
    proc, port = balance(target, options=("--use-xheaders",))
    with proc:
        seen = {k.lower(): v for k, v in json.loads(get(port, "/headers", sent)[2])["headers"]}
        assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "https" and seen["x-forwarded-host"] == "app.example.com"
        assert seen["x-real-ip"] == "203.0.113.7"
    proc, port = balance(target)
    with proc:
        seen = {k.lower(): v for k, v in json.loads(get(port, "/headers", sent)[2])["headers"]}
        assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
        assert seen["x-real-ip"] == "127.0.0.1"


def test_body_limits_host_and_origin_rules(backends: Fleet) -> None:
    target = f"127.0.0.1:{backends.base_port}"
    proc, port = balance(target, options=("--max-body-size", "1KiB", "--allow-host", "good.test",
                                          "--allow-websocket-origin", "good.test:8080"))
    with proc:
        chunked = b"POST /upload HTTP/1.1\r\nHost: good.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += b"400\r\n" + b"z" * 1024 + b"\r\n" + b"10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n"
        assert status_of(raw(port, chunked)) == 413
        fits = b"POST /upload HTTP/1.1\r\nHost: good.test\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n" + b"z" * 1024
        answer = raw(port, fits)
        assert status_of(answer) == 200 and b'"size": 1024' in answer
        assert status_of(raw(port, b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")) == 421
        # A name without a port means :80, as in Bokeh's lists: a foreign port is refused.
        assert get(port, headers={"Host": "good.test"})[0] == 200
        assert get(port, headers={"Host": "good.test:5006"})[0] == 421
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5, origin="http://evil.test",
                                        host="good.test")
        assert refused.value.status_code == 403
        ok = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5,
                                         origin="http://good.test:8080", host="good.test")
        ok.send("x")
        assert ok.recv().endswith(": x")
        ok.close()
        status, _, body = get(port, "/metrics", {"Host": "good.test"})
        reasons = {s.labels["reason"]: s.value for f in text_string_to_metric_families(body.decode())
                   for s in f.samples if s.name == "fleet_client_errors_total"}
        assert status == 200
        assert reasons["body_too_large"] == 1 and reasons["bad_host"] == 2 and reasons["bad_origin"] == 1


def test_worker_dying_mid_response_closes_the_client_connection(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
        connection.request("GET", "/die")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "1000000"
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        connection.close()
        wait_until(lambda: sum(w["restarts"] for w in fleet.status()["workers"]) == 1, 10,
                   message="the dead worker restarted")
        assert get(fleet.port)[0] == 200


def test_a_client_pinned_to_a_removed_worker_is_reassigned(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        assert worker_of(get(fleet.port, headers={"Cookie": "fleet_affinity=g1w1"})[2]) == "g1w1"
        assert fleet.cli("scale", "1").returncode == 0
        status, headers, body = get(fleet.port, headers={"Cookie": "fleet_affinity=g1w1"})
        assert status == 200 and worker_of(body) == "g1w0"
        assert headers["set-cookie"].startswith("fleet_affinity=g1w0;")


def pinned_websocket(fleet: Fleet, worker: str) -> websocket.WebSocket:
    """A WebSocket through the proxy to ``worker`` (by affinity cookie), checked with one echo."""
    sock = ws_connect(fleet.port, cookie=worker)
    sock.send("a")
    assert sock.recv() == f"{worker}: a"
    return sock


def assert_closed_then_a_new_one_works(fleet: Fleet, sock: websocket.WebSocket) -> None:
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        sock.recv()
        sock.recv()
    fresh = ws_connect(fleet.port)
    fresh.send("b")
    assert re.fullmatch(r"g\d+w[01]: b", fresh.recv())
    fresh.close()


def test_killed_worker_websockets_close_and_new_ones_open_elsewhere(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        sock = pinned_websocket(fleet, "g1w1")
        os.kill(fleet.worker("g1w1")["pid"], signal.SIGKILL)
        assert_closed_then_a_new_one_works(fleet, sock)
        wait_until(lambda: fleet.worker("g1w1")["state"] == "ready", 10, message="w1 back")
        wait_until(lambda: all(w["connections"] == 0 for w in fleet.status()["workers"]), 10,
                   message="websocket gauges back to 0")


def test_https_and_unix_socket_listeners(backends: Fleet, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    unix_path = tmp_path / "proxy.sock"
    proc, port = balance(f"127.0.0.1:{backends.base_port}", options=(
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--unix-socket", str(unix_path)))
    with proc:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        connection.request("GET", "/headers")
        seen = {k.lower(): v for k, v in json.loads(connection.getresponse().read())["headers"]}
        connection.close()
        assert seen["x-forwarded-proto"] == "https"
        answer = tls_over_unix_socket(unix_path, context, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and b"hello from g1w" in answer
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not unix_path.exists()


def test_reload_with_drain_timeout_0_cuts_open_websockets_at_once(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, "--graceful-timeout", "20", "--drain-timeout", "0", workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        sock = pinned_websocket(fleet, "g1w0")
        start = time.monotonic()
        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - start < 10  # not 2 x --graceful-timeout
        assert_closed_then_a_new_one_works(fleet, sock)
