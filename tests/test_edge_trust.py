"""Header trust and allowlists on real sockets.

A client's forwarding headers never reach a worker unless it is a --trusted-proxy; a worker
reached directly honours X-headers only from fleet's proxy and trusted proxies; Host and Origin
allowlists follow Bokeh's rules; absolute-form targets are checked and rewritten."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
import websocket

from support import free_port, websocket_upgrade
from test_balancer import BACKEND, get, raw, status_of
from up_helpers import Fleet, balance, up, workers_without_proxy

FORGED = {"X-Scheme": "https", "X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1",
          "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1;proto=https",
          "X-Forwarded-Host": "evil.test", "X-Forwarded-Port": "443", "X-Forwarded-Prefix": "/admin",
          "X-Url-Scheme": "https", "Front-End-Https": "on", "X-Client-IP": "127.0.0.1"}


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("backends"), BACKEND) as started:
        yield started


def seen_by_worker(port: int, headers: dict[str, str], source: str | None = None,
                   path: str = "/headers") -> dict[str, Any]:
    """What the backend's /headers saw, for a request sent from ``source`` (a loopback address)."""
    with socket.socket() as sock:
        sock.settimeout(10)
        if source:
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{lines}\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert status_of(answer) == 200, answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    body["headers"] = {k.lower(): v for k, v in body["headers"]}
    return body


def test_forged_forwarding_headers_never_reach_a_worker_through_the_proxy(backends: Fleet) -> None:
    proc, port = balance(f"127.0.0.1:{backends.base_port}")
    with proc:
        seen = seen_by_worker(port, FORGED)
        assert seen["protocol"] == "http" and seen["remote_ip"] == "127.0.0.1"
        headers = seen["headers"]
        assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-real-ip"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == "t"
        for name in ("x-scheme", "forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-url-scheme",
                     "front-end-https", "x-client-ip"):
            assert name not in headers, name


def test_a_trusted_proxys_headers_are_extended_and_x_real_ip_is_resolved(backends: Fleet) -> None:
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--trusted-proxy", "127.0.0.1",
                         "--access-log")
    with proc:
        sent = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Real-IP": "6.6.6.6", "X-Forwarded-Proto": "https",
                "X-Forwarded-Prefix": "/app"}
        headers = seen_by_worker(port, sent)["headers"]
        assert headers["x-forwarded-for"] == "6.6.6.6, 203.0.113.7, 127.0.0.1"
        assert headers["x-real-ip"] == "203.0.113.7"  # resolved, not the client's X-Real-IP
        assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-prefix"] == "/app"
        # the access log names the resolved client
        proc.wait_for_output(r'203\.0\.113\.7 "GET /headers" 200', timeout=10)
        # a peer outside the trusted list (127.0.0.2) is the client, whatever it says
        headers = seen_by_worker(port, sent, source="127.0.0.2")["headers"]
        assert headers["x-forwarded-for"] == "127.0.0.2" and headers["x-real-ip"] == "127.0.0.2"
        assert headers["x-forwarded-proto"] == "http" and "x-forwarded-prefix" not in headers


def test_a_worker_reached_directly_ignores_x_headers_from_untrusted_peers(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        direct = seen_by_worker(fleet.base_port, FORGED, source="127.0.0.2")
        assert direct["remote_ip"] == "127.0.0.2" and direct["protocol"] == "http"
        assert not any(name in direct["headers"] for name in ("x-scheme", "x-forwarded-for", "x-real-ip"))
        # fleet's own proxy (127.0.0.1) is believed
        local = seen_by_worker(fleet.base_port, {"X-Real-IP": "203.0.113.7", "X-Scheme": "https"})
        assert local["remote_ip"] == "203.0.113.7" and local["protocol"] == "https"


def test_a_worker_honours_x_headers_from_a_trusted_proxy(tmp_path: Path) -> None:
    fleet = up(tmp_path, BACKEND, "--trusted-proxy", "127.0.0.2/32", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        seen = seen_by_worker(fleet.base_port, {"X-Real-IP": "203.0.113.7", "X-Scheme": "https"},
                              source="127.0.0.2")
        assert seen["remote_ip"] == "203.0.113.7" and seen["protocol"] == "https"
        untrusted = seen_by_worker(fleet.base_port, {"X-Real-IP": "203.0.113.7"}, source="127.0.0.3")
        assert untrusted["remote_ip"] == "127.0.0.3"


def test_host_allowlist_and_absolute_form_targets(backends: Fleet) -> None:
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--allow-host", "app.test",
                         "--allow-host", "*.corp.test:*", "--access-log")
    with proc:
        assert get(port, "/headers", {"Host": "app.test"})[0] == 200
        assert get(port, "/headers", {"Host": "app.test:80"})[0] == 200
        assert get(port, "/headers", {"Host": "app.test:8443"})[0] == 421
        assert get(port, "/headers", {"Host": "x.corp.test:1234"})[0] == 200
        assert get(port, "/headers", {"Host": "x.y.corp.test:1234"})[0] == 421
        # absolute-form with a foreign authority: refused, though Host is allowed
        foreign = raw(port, b"GET http://evil.test/headers HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert status_of(foreign) == 421
        # absolute-form with an allowed authority: origin-form for the worker, Host replaced
        answer = raw(port, b"GET http://x.corp.test:9/headers?a=1 HTTP/1.1\r\nHost: app.test\r\n"
                           b"Connection: close\r\n\r\n")
        assert status_of(answer) == 200
        seen = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert seen["uri"] == "/headers?a=1"
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["host"] == "x.corp.test:9" and headers["x-forwarded-host"] == "x.corp.test:9"
        assert status_of(raw(port, b"GET http://user@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n")) == 400
    # nothing refused reached the worker: the access log shows only the two accepted paths
    log = [line for line in proc.output().splitlines() if '"GET /headers"' in line]
    assert len(log) == 4, log


def test_websocket_origins_follow_bokehs_rules(backends: Fleet) -> None:
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--allow-websocket-origin", "app.example.com",
                         "--allow-websocket-origin", "*.corp.example:5006")
    with proc:
        def status(origin: str) -> int:
            try:
                sock = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5, origin=origin)
            except websocket.WebSocketBadStatusException as refused:
                return int(refused.status_code)
            sock.send("x")
            assert sock.recv().endswith(": x")
            sock.close()
            return 101
        assert status("https://app.example.com") == 101  # no port: :80, the scheme is not compared
        assert status("http://app.example.com:80") == 101
        assert status("https://app.example.com:8443") == 403
        assert status("http://app.example.com.evil.net") == 403
        assert status("http://a.corp.example:5006") == 101
        assert status("http://a.b.corp.example:5006") == 403
        assert status("null") == 403


def _upgrade(port: int, host: str, origin: str) -> bytes:
    return websocket_upgrade(port, "/bokeh_random/ws", origin, host)


def test_bokeh_wildcard_origins_pass_the_proxy_and_the_bokeh_worker_alike(tmp_path: Path) -> None:
    bokeh_app = str(Path(__file__).resolve().parent.parent / "examples" / "bokeh_random")
    port = free_port()
    fleet = up(tmp_path, bokeh_app, "--allow-websocket-origin", f"*.corp.example:{port}",
               workers=1, proxy=True, port=port)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=90)
        host = f"a.corp.example:{port}"
        # allowed by the proxy and by Bokeh (the 101 is Bokeh's: Tornado's Server header)
        accepted = _upgrade(port, host, f"http://{host}")
        assert accepted.startswith(b"HTTP/1.1 101") and b"TornadoServer" in accepted
        # one label too many: the proxy refuses, and so would the worker with the same list
        assert _upgrade(port, host, f"http://a.b.corp.example:{port}").startswith(b"HTTP/1.1 403")
        direct = _upgrade(fleet.base_port, host, f"http://a.b.corp.example:{port}")
        assert direct.startswith(b"HTTP/1.1 403") and b"TornadoServer" in direct
        assert _upgrade(port, host, f"https://a.corp.example:{port + 1}").startswith(b"HTTP/1.1 403")
