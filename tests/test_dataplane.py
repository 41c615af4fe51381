"""``fleet up --proxy haproxy|nginx``: the real HAProxy and nginx run by fleet in front of real
workers. Traffic reaches every worker, ``fleet scale`` and ``fleet reload`` are followed (HAProxy
through its runtime API with drains; nginx through graceful reloads), a killed server is
restarted, metrics are served next to fleet's, and ``fleet down`` leaves no process and no file.
Locally a missing nginx/haproxy skips; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import http.client
import os
import signal
from pathlib import Path
from typing import Iterator

import pytest
import websocket

from support import EXAMPLES, wait_until, require_tool
from test_drills import LoadGenerator, get
from up_helpers import Fleet, family, living, processes_mentioning, up

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")

pytestmark = pytest.mark.timeout(180)


def start(tmp_path: Path, kind: str, *options: str, workers: int = 2) -> Fleet:
    require_tool(kind)
    fleet = up(tmp_path, TORNADO_APP, "--proxy", kind, *options, workers=workers, proxy=True)
    fleet.proc.wait_for_output(r"ready: open", timeout=60)
    return fleet


@pytest.fixture
def stopped_cleanly(tmp_path: Path) -> Iterator[None]:
    """After the test: nothing that mentions its directory runs, and the private dir is gone."""
    yield
    wait_until(lambda: not processes_mentioning(str(tmp_path)), 20, message="no process left")
    assert not (tmp_path / "fleet.dataplane").exists()


def served_by(port: int, headers: dict[str, str] | None = None) -> str:
    status, body = get(port, headers=headers)
    assert status == 200, body
    return body.split()[2].decode()  # "hello from g2w0 on port ..."


def who_answers(port: int, tries: int = 40) -> set[str]:
    return {served_by(port, {"Connection": "close"}) for _ in range(tries)}


def server_pid(fleet: Fleet) -> int:
    plane = fleet.status()["data_plane"]
    assert plane["pid"], plane
    return int(plane["pid"])


def down(fleet: Fleet) -> None:
    """``fleet down``: exit 0, and every process fleet started (nginx's workers too) is gone."""
    started = family(fleet.proc.pid)
    assert any("nginx" in p.name() or "haproxy" in p.name() for p in living(started))
    result = fleet.cli("down")
    assert result.returncode == 0, result.stderr
    assert fleet.proc.wait(60) == 0
    assert "fleet | stopped" in fleet.proc.output()
    wait_until(lambda: not living(started), 10, message="every process of fleet gone")


# -- HAProxy --------------------------------------------------------------------------------

def test_haproxy_reaches_every_worker_follows_scale_and_serves_metrics(tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "haproxy")
    with fleet.proc:
        status = fleet.status()
        assert status["data_plane"]["kind"] == "haproxy"
        assert "data plane: haproxy pid" in fleet.cli("status").stdout
        config = (tmp_path / "fleet.dataplane" / "haproxy.conf").read_text()
        assert "stats socket" in config and "maxconn" not in config.split("backend fleet_workers")[1]
        assert wait_until(lambda: who_answers(fleet.port) == {"g1w0", "g1w1"}, 20)

        result = fleet.cli("scale", "3")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: who_answers(fleet.port) == {"g1w0", "g1w1", "g2w2"}, 20, message="3 workers")
        result = fleet.cli("scale", "1")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: who_answers(fleet.port, 20) == {"g1w0"}, 20, message="1 worker")
        refused = fleet.cli("scale", "40")
        assert refused.returncode != 0 and "server slots" in refused.stderr

        status_code, body = get(fleet.port, "/metrics/haproxy")
        assert status_code == 200 and b"haproxy_server_current_sessions" in body
        assert b'server="w0"' in body
        status_code, body = get(fleet.port, "/metrics")
        assert status_code == 200 and b"fleet_worker_up" in body
        status_code, body = get(fleet.port, "/_fleet/health/ready")
        assert status_code == 200 and b'"ready": 1' in body
        # The status page behind the data plane, with its own headers (the CSP) passed through.
        connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
        connection.request("GET", "/_fleet/")
        page = connection.getresponse()
        assert page.status == 200 and b"<!doctype html>" in page.read().lower()
        assert "default-src 'none'" in (page.getheader("Content-Security-Policy") or "")
        connection.close()
        status_code, body = get(fleet.port, "/_fleet/status.json")
        assert status_code == 200 and b'"g1w0"' in body
        down(fleet)


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_built_in_routes_answer_only_metrics_allow_clients_resolved_through_trusted_proxies(
        tmp_path: Path, stopped_cleanly: None, kind: str) -> None:
    fleet = start(tmp_path, kind, "--metrics-allow", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1",
                  "--no-sticky", workers=1)
    with fleet.proc:
        paths = ("/metrics", f"/metrics/{kind}", "/_fleet/health/live", "/_fleet/", "/_fleet/status.json")
        for path in paths:
            assert get(fleet.port, path)[0] == 404, path  # 127.0.0.1 itself is not allowed
            # Through the trusted proxy (127.0.0.1) the client is the address it forwarded.
            assert get(fleet.port, path, headers={"X-Forwarded-For": "8.8.8.8"})[0] == 404, path
            assert get(fleet.port, path, headers={"X-Forwarded-For": "10.1.2.3"})[0] == 200, path
        assert served_by(fleet.port) == "g1w0"
        down(fleet)


def test_haproxy_reload_under_keepalive_load_fails_nothing_and_drains_old_workers(
        tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "haproxy", "--graceful-timeout", "10")
    with fleet.proc:
        sockets = [websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/ws", timeout=10) for _ in range(6)]
        owners = []
        for sock in sockets:
            sock.send("hi")
            owners.append(sock.recv().partition(": ")[0])
        assert set(owners) == {"g1w0", "g1w1"}
        load = LoadGenerator(fleet.port, clients=8)
        try:
            for generation in (2, 3):
                result = fleet.cli("reload")
                assert result.returncode == 0, result.stderr
                assert f"generation {generation} ready" in result.stdout
                wait_until(lambda: who_answers(fleet.port, 10) <= {f"g{generation}w0", f"g{generation}w1"}, 20,
                           message=f"new clients on generation {generation}")
                if generation == 2:
                    # The old generation drains: its WebSockets stay, and a client pinned to it by
                    # the cookie (HAProxy's names the port slot) still reaches it.
                    rows = {w["id"]: w["state"] for w in fleet.status()["workers"]}
                    assert rows["g1w0"] == rows["g1w1"] == "draining", rows
                    assert served_by(fleet.port, {"Cookie": "fleet_affinity=w1"}) == "g1w1"
        finally:
            outcome = load.stop()
        assert outcome.sent > 100 and outcome.failed == 0, (outcome.statuses, outcome.errors)
        # The third generation's reload ended generation 1's drain first (its port block);
        # generation 2 had no WebSockets, so it went as soon as it was idle.
        assert "ending the drain of generation 1 first" in fleet.proc.output()
        wait_until(lambda: {w["id"] for w in fleet.status()["workers"]} == {"g3w0", "g3w1"}, 30,
                   message="older generations stopped once idle")
        for sock in sockets:
            sock.close()
        down(fleet)


def test_a_killed_haproxy_is_restarted_with_the_drain_states(tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "haproxy")
    with fleet.proc:
        sock = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/ws", timeout=10)
        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        first = server_pid(fleet)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: fleet.status()["data_plane"]["pid"] not in (None, first), 20, message="restarted")
        fleet.proc.wait_for_output(r"haproxy restarted", timeout=20)
        # The draining generation stays out of rotation in the new HAProxy too.
        assert who_answers(fleet.port, 20) <= {"g2w0", "g2w1"}
        assert fleet.status()["data_plane"]["restarts"] == 1
        sock.close()
        down(fleet)


def test_haproxy_carries_the_per_worker_cap_and_queue_timeout(tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "haproxy", "--worker-max-conns", "1", "--queue-timeout", "1", workers=1)
    with fleet.proc:
        config = (tmp_path / "fleet.dataplane" / "haproxy.conf").read_text()
        assert "timeout queue 1s" in config and "maxconn 1" in config
        # One slow request holds the only slot: a second one waits in HAProxy's queue and gets
        # 503 once --queue-timeout passed.
        slow = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=30)
        slow.request("GET", "/slow?seconds=4")
        busy = b'haproxy_server_current_sessions{proxy="fleet_workers",server="w0"} 1'
        wait_until(lambda: busy in get(fleet.port, "/metrics/haproxy")[1], 10, message="slot taken")
        status, _ = get(fleet.port, "/", timeout=20)
        assert status == 503
        assert slow.getresponse().status == 200
        slow.close()
        down(fleet)


# -- nginx ----------------------------------------------------------------------------------

def test_nginx_reaches_every_worker_follows_scale_and_reload_and_serves_stub_status(
        tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "nginx")
    with fleet.proc:
        assert "warning: nginx: --sticky dropped" in fleet.proc.output()
        assert fleet.status()["data_plane"]["kind"] == "nginx"
        assert wait_until(lambda: who_answers(fleet.port) == {"g1w0", "g1w1"}, 20)
        result = fleet.cli("scale", "3")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: who_answers(fleet.port) == {"g1w0", "g1w1", "g2w2"}, 20, message="3 workers")

        # A request in flight on an old worker finishes; the worker stops only afterwards.
        slow = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=30)
        slow.request("GET", "/slow?seconds=3")
        wait_until(lambda: "Writing: 2" in get(fleet.port, "/metrics/nginx")[1].decode(), 10)
        load = LoadGenerator(fleet.port, clients=4)
        try:
            result = fleet.cli("reload")
            assert result.returncode == 0, result.stderr
            wait_until(lambda: who_answers(fleet.port, 10) <= {"g3w0", "g3w1", "g3w2"}, 20,
                       message="new clients on generation 3")
            response = slow.getresponse()
            body = response.read()
            assert response.status == 200 and body.startswith(b"slept 3.0 s in g"), body
            assert not body.startswith(b"slept 3.0 s in g3"), body  # an old worker finished it
        finally:
            outcome = load.stop()
        slow.close()
        # Documented: nginx closes an old worker's idle keep-alive connections at a reload, so a
        # client may see its kept-alive connection closed (never a 5xx).
        assert outcome.sent > 50 and not [code for code in outcome.statuses if code >= 500], outcome.statuses
        wait_until(lambda: {w["id"] for w in fleet.status()["workers"]} == {"g3w0", "g3w1", "g3w2"}, 30,
                   message="old generation stopped")
        # --sticky is dropped with nginx: no cookie is set, and a client still sending one from
        # elsewhere is not pinned to a port the reload left (its workers moved to the other block).
        pinned = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
        for _ in range(4):
            pinned.request("GET", "/", headers={"Cookie": "fleet_affinity=w0"})
            response = pinned.getresponse()
            assert response.status == 200 and response.read().startswith(b"hello from g3w"), response.status
            assert response.getheader("Set-Cookie") is None
        pinned.close()
        status_code, body = get(fleet.port, "/metrics/nginx")
        assert status_code == 200 and b"Active connections:" in body
        status_code, body = get(fleet.port, "/metrics")
        assert status_code == 200 and b"fleet_worker_up" in body
        down(fleet)


def test_a_killed_nginx_is_restarted(tmp_path: Path, stopped_cleanly: None) -> None:
    fleet = start(tmp_path, "nginx", "--no-sticky", workers=1)
    with fleet.proc:
        first = server_pid(fleet)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: fleet.status()["data_plane"]["pid"] not in (None, first), 20, message="restarted")
        fleet.proc.wait_for_output(r"nginx restarted", timeout=20)
        assert served_by(fleet.port) == "g1w0"
        assert "sticky dropped" not in fleet.proc.output()
        down(fleet)


# -- errors ---------------------------------------------------------------------------------

def test_an_option_nginx_cannot_honour_is_refused_before_anything_starts(tmp_path: Path) -> None:
    require_tool("nginx")
    fleet = up(tmp_path, TORNADO_APP, "--proxy", "nginx", "--max-header-count", "50", proxy=True)
    assert fleet.proc.wait(30) == 1
    assert "--proxy nginx cannot honour --max-header-count" in fleet.proc.output()
    assert not processes_mentioning(str(tmp_path))


def test_a_configuration_the_server_rejects_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    require_tool("haproxy")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    fleet = up(tmp_path, TORNADO_APP, "--proxy", "haproxy", "--ssl-certfile", str(bad), "--ssl-keyfile",
               str(bad), proxy=True)
    assert fleet.proc.wait(60) == 1
    output = fleet.proc.output()
    assert "haproxy rejects the generated configuration" in output
    assert "ready (pid" not in output  # no worker was started
    assert not processes_mentioning(str(tmp_path))
    assert not (tmp_path / "fleet.dataplane").exists()


def test_a_taken_port_stops_the_start_before_any_worker_runs(tmp_path: Path) -> None:
    require_tool("haproxy")
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        fleet = up(tmp_path, TORNADO_APP, "--proxy", "haproxy", port=port, proxy=True)
        assert fleet.proc.wait(30) == 1
    output = fleet.proc.output()
    assert f"--proxy haproxy: proxy port 127.0.0.1:{port} is already in use" in output
    assert "ready (pid" not in output  # no worker was started
    assert not processes_mentioning(str(tmp_path)) and not (tmp_path / "fleet.dataplane").exists()


def test_kill_9_of_the_master_takes_nginx_and_its_workers_along(tmp_path: Path) -> None:
    fleet = start(tmp_path, "nginx", "--no-sticky", workers=1)
    with fleet.proc:
        started = family(fleet.proc.pid)
        assert sum("nginx" in p.name() for p in started) >= 2  # master and worker(s)
        os.kill(fleet.proc.pid, signal.SIGKILL)
        wait_until(lambda: not living(started), 20, message="nothing outlives a killed master")
