"""``fleet balance --proxy-processes 2`` at the edges: TLS, the redirect listener and a unix
socket served by both processes; a port in use fails fast and leaves nothing running."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from support import free_port, start_fleet, tls_over_unix_socket, wait_until
from test_balancer import BACKEND, raw, status_of
from test_edge_tls import make_cert
from up_helpers import Fleet, balance, family, living, workers_without_proxy


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("backends"), BACKEND) as started:
        yield started


def proxy_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if "fleet.balancer.child" in " ".join(p.cmdline())]


def test_tls_redirect_and_unix_socket_with_two_proxy_processes(backends: Fleet, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "localhost")
    redirect = free_port()
    unix_path = tmp_path / "proxy.sock"
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--proxy-processes", "2", "--ssl-certfile", str(cert),
                         "--ssl-keyfile", str(key), "--https-redirect-port", str(redirect),
                         "--unix-socket", str(unix_path))
    with proc:
        everyone = family(proc.pid)
        assert len(proxy_children(proc.pid)) == 3  # two serving, one spare
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        for _ in range(10):  # new connections: both processes answer over TLS
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
            connection.request("GET", "/")
            response = connection.getresponse()
            assert response.status == 200 and b"hello from g1w0" in response.read()
            connection.close()
        answer = raw(redirect, b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status_of(answer) == 301 and f"Location: https://localhost:{port}/x".encode() in answer
        for _ in range(10):
            answer = tls_over_unix_socket(unix_path, context, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200") and b"hello from g1w0" in answer

        def metrics_total() -> int:
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
            connection.request("GET", "/metrics")
            body = connection.getresponse().read().decode()
            connection.close()
            return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
                       if line.startswith("fleet_requests_total{"))

        wait_until(lambda: metrics_total() == 20, timeout=10, message="20 requests in /metrics")
        proc.signal(signal.SIGHUP)
        proc.wait_for_output(r"TLS certificate reloaded .* \(2 proxy processes\)", timeout=10)
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not unix_path.exists()
    wait_until(lambda: not living(everyone), timeout=10, message="every proxy process gone")


def test_port_in_use_fails_fast_and_leaves_no_proxy_process(backends: Fleet) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = start_fleet("balance", f"127.0.0.1:{backends.base_port}", "--port", str(port),
                           "--proxy-processes", "2")
        with proc:
            assert proc.wait(timeout=30) == 1
        assert f"proxy port 127.0.0.1:{port} is already in use by pid" in proc.output()
