"""Live configuration reload end to end: a real ``fleet up`` started from a ``fleet.toml``, the
file changed, ``fleet reload``; each change in effect, nothing dropped; an invalid file refused
with ``fleet up``'s message and the fleet unchanged; ``fleet check`` with no fleet running."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
from pathlib import Path

import psutil
import pytest
import websocket

from support import (FRESH_METRICS, free_port, free_port_range, http_get, require_tool, start_fleet, wait_until,
                     websocket_upgrade)
from test_drills import LoadGenerator, metric, scrape
from fleet.worker.heartbeat import ENV_INTERVAL
from liveload import Echo, LiveLoad
from up_helpers import Fleet, run_cli

BACKEND = Path(__file__).resolve().parent / "apps" / "backend.py"
NEW_ORIGIN = "http://new.example.com"


def start(tmp_path: Path, toml: str, *options: str) -> Fleet:
    """fleet up backend.py with its ports on the command line and the rest in fleet.toml."""
    shutil.copy(BACKEND, tmp_path / "backend.py")
    (tmp_path / "fleet.toml").write_text(toml)
    base, surge, port = free_port_range(3), free_port_range(3), free_port()
    control = str(tmp_path / "fleet.sock")
    proc = start_fleet("up", "backend.py", "--base-port", str(base), "--surge-base-port", str(surge),
                       "--port", str(port), "--control-socket", control, "--config", "fleet.toml", *options,
                       env=FRESH_METRICS, cwd=str(tmp_path))  # scrape(): /metrics rendered for each scrape
    fleet = Fleet(proc, base, port, control, surge)
    proc.wait_for_output(r"ready: open", timeout=60)
    return fleet


def upgrade_status(port: int, origin: str) -> int:
    """The status a WebSocket upgrade with this Origin gets through the proxy (a new connection)."""
    return int(websocket_upgrade(port, "/ws", origin, f"127.0.0.1:{port}").split(b" ", 2)[1])


def many_headers(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/", headers={f"X-Extra-{i}": "1" for i in range(11)})
    response = connection.getresponse()
    response.read()
    return response.status


def echo(sock: websocket.WebSocket, text: str) -> str:
    sock.send(text)
    return sock.recv()


def current_ready(fleet: Fleet) -> int:
    return sum(1 for w in fleet.status()["workers"] if w["current"] and w["state"] == "ready")


def test_a_changed_fleet_toml_applies_live_with_nothing_dropped(tmp_path: Path) -> None:
    fleet = start(tmp_path, "workers = 2\nmax_connections = 100\n")
    with fleet.proc:
        origin = f"http://127.0.0.1:{fleet.port}"
        sockets = [websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/ws", timeout=10, origin=origin)
                   for _ in range(4)]
        assert all(echo(s, "before").endswith(": before") for s in sockets)
        old = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
        assert many_headers(old) == 200
        assert upgrade_status(fleet.port, NEW_ORIGIN) == 403
        load = LoadGenerator(fleet.port, 2)
        try:
            (tmp_path / "fleet.toml").write_text(
                "workers = 3\nmax_connections = 50\nmax_memory = '2GiB'\nmax_header_count = 8\n"
                f"allow_websocket_origin = ['new.example.com', '127.0.0.1:{fleet.port}']\n")
            reloaded = fleet.cli("reload")
            assert reloaded.returncode == 0, reloaded.stderr
            for expected in ("--workers: 2 -> 3: scaling", "--max-connections: 100 -> 50: in place",
                             "--max-memory: none -> 2147483648: in place",
                             "--allow-websocket-origin: [] -> [new.example.com, 127.0.0.1:",
                             "scaled to 3 workers"):
                assert expected in reloaded.stdout, reloaded.stdout
            # In effect at once: the new origin, the new worker count, the header limit for new
            # connections, while a connection accepted before keeps the limit it had.
            assert upgrade_status(fleet.port, NEW_ORIGIN) == 101
            assert fleet.status()["desired"] == 3 and current_ready(fleet) == 3
            assert many_headers(http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)) == 431
            assert many_headers(old) == 200
            assert all(echo(s, "after").endswith(": after") for s in sockets)
        finally:
            result = load.stop()
            old.close()
        assert result.failed == 0 and result.sent > 0, (result.statuses, result.errors[:5])
        assert all(echo(s, "still").endswith(": still") for s in sockets)
        for sock in sockets:
            sock.close()
        status = json.loads(fleet.cli("status", "--json").stdout)
        assert status["config"]["last_reload"]["result"] == "applied"
        assert status["config"]["source"]["file"] == str(tmp_path / "fleet.toml")
        assert metric(scrape(fleet.port), "fleet_config_reloads_total", result="applied") == 1
        assert "last configuration reload: applied" in fleet.cli("status").stdout


def test_an_invalid_fleet_toml_is_refused_and_the_fleet_is_unchanged(tmp_path: Path) -> None:
    fleet = start(tmp_path, "workers = 2\n")
    with fleet.proc:
        before = {(w["id"], w["pid"]) for w in fleet.status()["workers"]}
        for text, message in (("workers = 3\nbogus = 1\n", "fleet.toml: unknown setting 'bogus'"),
                              ("workers = 3\nmax_body_size = 'lots'\n", "--max-body-size (from fleet.toml): not a size"),
                              ("max_memory = '1GiB'\nmax_memory_hard = '1MiB'\n", "--max-memory-hard must be larger")):
            (tmp_path / "fleet.toml").write_text(text)
            refused = fleet.cli("reload")
            assert refused.returncode == 1 and message in refused.stderr, refused.stderr
            assert "nothing changed" in refused.stderr
        status = fleet.status()
        assert {(w["id"], w["pid"]) for w in status["workers"]} == before
        assert status["generation"] == 1 and status["desired"] == 2
        assert status["config"]["last_reload"]["result"] == "refused"
        text = fleet.cli("status").stdout
        assert f"configuration: {tmp_path / 'fleet.toml'}, command line: " in text, text
        assert "last configuration reload: refused, " in text and "--max-memory-hard must be larger" in text, text
        assert metric(scrape(fleet.port), "fleet_config_reloads_total", result="refused") == 3
        assert metric(scrape(fleet.port), "fleet_config_reloads_total", result="applied") == 0
        # SIGHUP does the same as fleet reload; the file fixed, it applies.
        (tmp_path / "fleet.toml").write_text("workers = 2\nmax_header_count = 8\n")
        fleet.proc.signal(signal.SIGHUP)
        wait_until(lambda: fleet.status()["config"]["last_reload"]["result"] == "applied", timeout=60)
        assert many_headers(http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)) == 431


def test_what_cannot_change_live_is_reported_and_the_rest_applies(tmp_path: Path) -> None:
    fleet = start(tmp_path, "workers = 2\n")
    with fleet.proc:
        (tmp_path / "fleet.toml").write_text("workers = 2\nproxy_processes = 2\nmax_header_count = 8\n")
        reloaded = fleet.cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "--proxy-processes: 1 -> 2: not possible live (a bound socket or name" in reloaded.stdout
        assert many_headers(http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)) == 431
        assert fleet.status()["config"]["last_reload"]["result"] == "partial"
        assert fleet.status()["proxies"] is None


def test_every_proxy_process_has_the_new_settings_when_reload_answers(tmp_path: Path) -> None:
    fleet = start(tmp_path, "workers = 2\n", "--proxy-processes", "2")
    with fleet.proc:
        assert upgrade_status(fleet.port, NEW_ORIGIN) == 403
        (tmp_path / "fleet.toml").write_text("workers = 2\nallow_websocket_origin = ['new.example.com']\n")
        reloaded = fleet.cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "applied in 2 proxy processes" in reloaded.stdout
        # The kernel spreads new connections over both processes: every one must allow it.
        assert [upgrade_status(fleet.port, NEW_ORIGIN) for _ in range(16)] == [101] * 16


def test_fleet_check_validates_without_a_running_fleet(tmp_path: Path) -> None:
    shutil.copy(BACKEND, tmp_path / "app.py")
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("workers = 3\nmax_connections = 50\n")
    bad.write_text("workers = 3\nmax_connections = 'many'\n")
    ok = run_cli("check", str(tmp_path / "app.py"), "--config", str(good))
    assert ok.returncode == 0 and "configuration OK" in ok.stdout and "3 workers of app (tornado app)" in ok.stdout
    refused = run_cli("check", str(tmp_path / "app.py"), "--config", str(bad))
    assert refused.returncode == 1 and "--max-connections (from fleet.toml)" in refused.stderr
    missing = run_cli("check", "--config", str(good))
    assert missing.returncode == 1 and "missing APP" in missing.stderr
    no_app = run_cli("check", str(tmp_path / "nothere.py"), "--config", str(good))
    assert no_app.returncode == 1


def post_status(port: int, size: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/upload", body=b"x" * size)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_managed_proxy_is_regenerated_checked_and_reloaded_under_load(tmp_path: Path, kind: str) -> None:
    """The server's own reload (nginx SIGHUP, HAProxy master-worker SIGUSR2): same master,
    listening sockets kept, old workers finish their connections; under load nothing fails."""
    require_tool(kind)
    fleet = start(tmp_path, "workers = 2\n", "--proxy", kind)
    with fleet.proc:
        master = fleet.status()["data_plane"]["pid"]
        assert post_status(fleet.port, 64 * 1024) == 200
        with LiveLoad(fleet.port, websockets=10, exchange=Echo("/ws")) as load:
            (tmp_path / "fleet.toml").write_text("workers = 2\nmax_body_size = '16KiB'\n")
            reloaded = fleet.cli("reload")
            assert reloaded.returncode == 0, reloaded.stderr
            check = {"nginx": "nginx -t", "haproxy": "haproxy -c"}[kind]
            assert f"{kind}: configuration regenerated, checked ({check}) and reloaded" in reloaded.stdout
            assert post_status(fleet.port, 64 * 1024) == 413
            result = load.stop()
        status = fleet.status()["data_plane"]
        assert status["pid"] == master and status["reloads"] >= 1  # reloaded, not restarted
        if kind == "nginx":
            # nginx closes its idle keep-alive connections at each of its reloads (the new
            # generation's workers are one more), so a client that sends on one as it closes
            # gets a read error (browsers resend): at most once per connection per reload.
            failures = [f for f in result.failures() if not f.endswith("failed requests")]
            assert failures == [] and result.non_2xx_3xx == 0, result.summary()
            assert result.failed_requests == result.socket_errors.get("read", 0) <= 4 * status["reloads"]
        else:
            assert result.failures() == [], result.summary()
        if kind == "haproxy":  # a file the server rejects: the reload is refused, nothing changes
            (tmp_path / "fleet.toml").write_text("workers = 2\nmax_body_size = '16KiB'\nmax_header_count = 99999\n")
            generation = fleet.status()["generation"]
            refused = fleet.cli("reload")
            assert refused.returncode == 1 and "configuration refused, nothing changed" in refused.stderr, refused
            assert "--proxy haproxy: haproxy rejects the generated configuration" in refused.stderr
            assert "tune.http.maxhdr" in refused.stderr
            assert post_status(fleet.port, 64 * 1024) == 413
            status = fleet.status()
            assert status["data_plane"]["pid"] == master and status["generation"] == generation
            assert status["config"]["last_reload"]["result"] == "refused"


def test_metrics_port_access_and_worker_timeout_change_live(tmp_path: Path) -> None:
    """--metrics-allow on --metrics-port applies to the next request; --worker-timeout and
    --health-path reach the workers through the new generation."""
    metrics_port = free_port()
    fleet = start(tmp_path, "workers = 2\nmetrics_allow = ['10.0.0.0/8']\n", "--metrics-port", str(metrics_port))
    with fleet.proc:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert http_get(url)[0] == 404
        kept = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
        kept.request("GET", "/metrics")
        assert kept.getresponse().read() is not None
        (tmp_path / "fleet.toml").write_text(
            "workers = 2\nmetrics_allow = ['127.0.0.0/8']\nworker_timeout = 2\nhealth_path = '/'\n")
        reloaded = fleet.cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "--metrics-allow: [10.0.0.0/8] -> [127.0.0.0/8]: in place" in reloaded.stdout
        assert "--worker-timeout: 60.0 -> 2.0: new generation" in reloaded.stdout, reloaded.stdout
        assert "--health-path: none -> /: new generation" in reloaded.stdout
        status, _, body = http_get(url)
        assert status == 200 and b"fleet_config_reloads_total" in body
        kept.request("GET", "/metrics")  # a connection accepted before: the rule is per request
        assert kept.getresponse().status == 200
        kept.close()
        assert "partial" not in json.dumps(fleet.status()["config"]["last_reload"])
        # The new generation beats every 0.5 s (2 s / 4; it was 1 s).
        intervals = {psutil.Process(w["pid"]).environ()[ENV_INTERVAL]
                     for w in fleet.status()["workers"] if w["current"]}
        assert intervals == {"0.5"}


def get_status(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_raised_worker_max_conns_applies_to_the_next_request(tmp_path: Path) -> None:
    fleet = start(tmp_path, "workers = 1\nworker_max_conns = 1\nqueue_timeout = 0.5\n")
    with fleet.proc:

        def second_while_one_is_in_flight() -> int:
            slow = threading.Thread(target=get_status, args=(fleet.port, "/slow?seconds=4"))
            slow.start()
            try:
                wait_until(lambda: metric(scrape(fleet.port), "fleet_active_requests") >= 1, timeout=10)
                return get_status(fleet.port, "/")
            finally:
                slow.join()

        assert second_while_one_is_in_flight() == 503
        (tmp_path / "fleet.toml").write_text("workers = 1\nworker_max_conns = 2\nqueue_timeout = 0.5\n")
        reloaded = fleet.cli("reload")
        assert reloaded.returncode == 0 and "--worker-max-conns: 1 -> 2: in place" in reloaded.stdout, reloaded
        assert second_while_one_is_in_flight() == 200


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_fleet_check_asks_the_managed_server_too(tmp_path: Path, kind: str) -> None:
    """fleet check --proxy nginx|haproxy renders the server's file and runs nginx -t / haproxy -c."""
    require_tool(kind)
    shutil.copy(BACKEND, tmp_path / "app.py")
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(f"workers = 2\nproxy = '{kind}'\nport = 8123\n")
    # Valid for fleet; HAProxy allows at most 32767 header fields; nginx gets no ssl key it can read.
    bad.write_text(f"workers = 2\nproxy = '{kind}'\nport = 8123\n" + (
        "max_header_count = 99999\n" if kind == "haproxy" else
        f"ssl_certfile = '{tmp_path / 'app.py'}'\nssl_keyfile = '{tmp_path / 'app.py'}'\n"))
    ok = run_cli("check", str(tmp_path / "app.py"), "--config", str(good))
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr
    refused = run_cli("check", str(tmp_path / "app.py"), "--config", str(bad))
    assert refused.returncode == 1, refused.stdout
    assert f"fleet check: --proxy {kind}: {kind} rejects the generated configuration" in refused.stderr, refused.stderr
