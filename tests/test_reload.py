"""Reloads and recycling behind the built-in proxy, on real processes: a new generation in the
other port block, the old one draining (its WebSockets and pinned clients kept), a bad deploy
changing nothing, and workers recycled through the same drain."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from support import EXAMPLES, FRESH_METRICS, free_port_range, wait_until
from test_drills import LoadGenerator, get, metric, scrape
from up_helpers import Fleet, family, living, up

TORNADO_APP = EXAMPLES / "tornado_hello.py"
BROKEN = "raise ImportError('deploy_went_wrong_for_fleet_test')\n"


def start(tmp_path: Path, *options: str, workers: int = 2) -> tuple[Fleet, Path]:
    """fleet up on a copy of tornado_hello.py (so a test can edit the code between reloads)."""
    app = tmp_path / "app.py"
    shutil.copy(TORNADO_APP, app)
    fleet = up(tmp_path, str(app), *options, workers=workers, proxy=True, env=FRESH_METRICS)  # for scrape()
    fleet.proc.wait_for_output(r"ready: open", timeout=60)
    return fleet, app


def ws_open(fleet: Fleet) -> tuple[websocket.WebSocket, str]:
    """A WebSocket through the proxy and the id of the worker behind it (from one echo)."""
    sock = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/ws", timeout=10)
    sock.send("hi")
    owner, _, text = sock.recv().partition(": ")
    assert text == "hi"
    return sock, owner


def rows(fleet: Fleet) -> dict[str, dict]:
    return {w["id"]: w for w in fleet.status()["workers"]}


def served_by(fleet: Fleet) -> str:
    status, body = get(fleet.port)
    assert status == 200
    return body.split()[2].decode()  # "hello from g2w0 on port ..."


@pytest.mark.slow
def test_reload_under_load_fails_nothing_and_keeps_every_websocket_on_its_draining_worker(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path)
    assert fleet.surge_port is not None
    with fleet.proc:
        sockets = [ws_open(fleet) for _ in range(50)]
        owners = {owner for _, owner in sockets}
        assert owners == {"g1w0", "g1w1"}
        load = LoadGenerator(fleet.port, clients=8)
        try:
            result = fleet.cli("reload")
            assert result.returncode == 0, result.stderr
            assert "generation 2 ready (2 workers on ports " \
                f"{fleet.surge_port}-{fleet.surge_port + 1}); generation 1 draining" in result.stdout
            # Returned once the new generation is ready; the old one drains with its WebSockets.
            status = rows(fleet)
            assert {(i, status[i]["state"], status[i]["port"]) for i in ("g2w0", "g2w1")} == {
                ("g2w0", "ready", fleet.surge_port), ("g2w1", "ready", fleet.surge_port + 1)}
            assert [status[i]["state"] for i in ("g1w0", "g1w1")] == ["draining", "draining"]
            assert status["g1w0"]["connections"] + status["g1w1"]["connections"] == 50
            # New clients land on the new generation.
            assert {served_by(fleet) for _ in range(10)} <= {"g2w0", "g2w1"}
            # A client pinned to a draining worker still reaches it (its Bokeh session lives there).
            status_code, body = get(fleet.port, headers={"Cookie": "fleet_affinity=g1w1"})
            assert status_code == 200 and b"hello from g1w1 " in body
        finally:
            outcome = load.stop()
        assert outcome.sent > 100 and outcome.failed == 0, (outcome.statuses, outcome.errors)
        # Every WebSocket is still open and still talks to the worker it started on.
        for sock, owner in sockets:
            sock.send("again")
            assert sock.recv() == f"{owner}: again"
        samples = scrape(fleet.port)
        assert metric(samples, "fleet_worker_draining", worker="w0") == 1
        assert metric(samples, "fleet_worker_info", worker="s0", generation="2") == 1
        assert metric(samples, "fleet_worker_up", worker="s1") == 1
        # Once their WebSockets close, the old workers are stopped and forgotten.
        for sock, _ in sockets:
            sock.close()
        wait_until(lambda: set(rows(fleet)) == {"g2w0", "g2w1"}, 20, message="generation 1 gone")
        assert "fleet_worker_draining" in str(scrape(fleet.port))
        assert metric(scrape(fleet.port), "fleet_worker_up", worker="w0") == 0.0  # no series left for w0
        assert "crash" not in fleet.proc.output()


def test_reload_to_code_that_cannot_import_changes_nothing(tmp_path: Path) -> None:
    fleet, app = start(tmp_path)
    with fleet.proc:
        before = rows(fleet)
        good = app.read_text()
        app.write_text(good + BROKEN)
        load = LoadGenerator(fleet.port, clients=8)
        try:
            result = fleet.cli("reload")
        finally:
            outcome = load.stop()
        assert result.returncode == 1
        assert "reload failed: generation 2 could not start (g2w0 failed to start: the app cannot boot" in result.stderr
        assert "generation 1 keeps serving with 2 workers" in result.stderr
        assert outcome.sent > 50 and outcome.failed == 0, (outcome.statuses, outcome.errors)
        # The traceback is shown once, not once per new worker.
        assert fleet.proc.output().count("ImportError: deploy_went_wrong_for_fleet_test") == 1
        after = fleet.status()
        assert {w["id"]: (w["pid"], w["state"]) for w in after["workers"]} == {
            i: (w["pid"], "ready") for i, w in before.items()}
        assert after["last_reload"]["ok"] is False
        assert "last reload FAILED: reload failed: generation 2" in fleet.cli("status").stdout
        assert {served_by(fleet) for _ in range(6)} == {"g1w0", "g1w1"}
        # Fixed code: the next reload goes through (and says which generation it is).
        app.write_text(good)
        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        assert "generation 3 ready" in result.stdout
        assert fleet.status()["last_reload"]["ok"] is True


def test_a_reload_while_an_older_generation_drains_ends_that_drain_first_and_says_so(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path, workers=1)
    with fleet.proc:
        sock, owner = ws_open(fleet)
        assert owner == "g1w0"
        assert fleet.cli("reload").returncode == 0
        assert rows(fleet)["g1w0"]["state"] == "draining"
        sock.send("still")
        assert sock.recv() == "g1w0: still"
        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        assert re.search(r"ending the drain of generation 1 first \(g1w0; their open connections are closed\)",
                         result.stdout), result.stdout
        # Generation 3 is back in the base block; generation 2 drains (nothing pins it: it goes).
        assert rows(fleet)["g3w0"]["port"] == fleet.base_port
        wait_until(lambda: set(rows(fleet)) == {"g3w0"}, 20, message="only generation 3 left")
        try:
            sock.recv()
            raise AssertionError("the WebSocket of the ended drain is still open")
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            pass


def test_max_requests_recycles_a_worker_through_a_new_one_without_failing_a_request(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path, "--max-requests", "40", "--max-requests-jitter", "10", workers=1)
    with fleet.proc:
        load = LoadGenerator(fleet.port, clients=2)
        replacement: dict[str, object] = {}

        def replaced() -> bool:
            row = rows(fleet).get("g2w0")
            if row is not None and row["state"] == "ready":
                replacement.update(row)  # kept: under load g2w0 itself may be recycled next
                return True
            return False

        try:
            wait_until(replaced, 30, message="g1w0 replaced by g2w0")
        finally:
            outcome = load.stop()
        assert outcome.failed == 0, (outcome.statuses, outcome.errors)
        fleet.proc.wait_for_output(r"g1w0:\d+ recycling \(max_requests: \d+ requests, its --max-requests is "
                                   r"(4\d|50)\)", 10)
        samples = scrape(fleet.port)
        assert metric(samples, "fleet_worker_recycles_total", reason="max_requests") >= 1
        assert metric(samples, "fleet_worker_restarts_total") == 0  # a recycle is not a crash
        assert replacement["port"] == fleet.surge_port


def test_fleet_down_while_a_generation_drains_stops_every_worker_and_leaves_nothing(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path, workers=1)
    with fleet.proc:
        sock, _ = ws_open(fleet)
        assert fleet.cli("reload").returncode == 0
        started = family(fleet.proc.pid)
        assert len({w["pid"] for w in fleet.status()["workers"]}) == 2  # g1w0 draining, g2w0 serving
        assert fleet.cli("down").returncode == 0
        assert fleet.proc.wait(timeout=60) == 0
        wait_until(lambda: not living(started), 5, message="every fleet process gone")
        assert "did not exit" not in fleet.proc.output() and "abandoned" not in fleet.proc.output()
        sock.close()


def test_a_taken_port_in_the_surge_block_stops_the_start_and_names_it(tmp_path: Path) -> None:
    surge = free_port_range(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", surge + 1))
        holder.listen()
        fleet = up(tmp_path, str(TORNADO_APP), workers=2, proxy=True, surge=surge)
        with fleet.proc:
            assert fleet.proc.wait(timeout=60) == 1
            output = fleet.proc.output()
            assert f"127.0.0.1:{surge + 1} is already in use by pid {os.getpid()}" in output
            assert not re.search(r"g1w\d:\d+ ready", output)  # no worker was started


def test_fleet_down_while_a_reload_starts_its_workers_ends_the_reload_and_leaves_nothing(tmp_path: Path) -> None:
    server = f"{sys.executable} -m http.server --bind 127.0.0.1 {{port}}"
    fleet = up(tmp_path, "--cmd", f"test -e slow && sleep 60; exec {server}", workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        (tmp_path / "slow").write_text("new workers hang at start\n")
        reload = subprocess.Popen([sys.executable, "-m", "fleet", "reload", "--control-socket", fleet.control],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: any(w["generation"] == 2 and w["pid"] for w in fleet.status()["workers"]), 20,
                       message="generation 2 starting")
            started = family(fleet.proc.pid)
            assert fleet.cli("down").returncode == 0
            assert fleet.proc.wait(timeout=60) == 0
            _, err = reload.communicate(timeout=30)
        finally:
            if reload.poll() is None:
                reload.kill()
                reload.wait()
        assert reload.returncode == 1 and "reload failed: generation 2 could not start" in err, err
        wait_until(lambda: not living(started), 5, message="every fleet process gone")


@pytest.mark.parametrize("tail, reason", [
    ("import os\nos._exit(1)\n", r"exited 3 times before becoming ready \(last exit code 1\)"),
    ("import time\ntime.sleep(3600)\n", r"not ready within --start-timeout 8 s"),
])
@pytest.mark.slow
def test_a_new_generation_that_crash_loops_or_never_gets_ready_changes_nothing(
        tmp_path: Path, tail: str, reason: str) -> None:
    fleet, app = start(tmp_path, "--start-timeout", "8")
    with fleet.proc:
        before = {w["id"]: w["pid"] for w in fleet.status()["workers"]}
        app.write_text(app.read_text() + tail)
        load = LoadGenerator(fleet.port, clients=4)
        try:
            result = fleet.cli("reload")
        finally:
            outcome = load.stop()
        assert result.returncode == 1
        assert re.search(r"reload failed: generation 2 could not start \(g2w0 failed to start: " + reason,
                         result.stderr), result.stderr
        assert outcome.failed == 0, (outcome.statuses, outcome.errors)
        wait_until(lambda: {w["id"]: w["pid"] for w in fleet.status()["workers"]} == before, 15,
                   message="only generation 1 left, unchanged")
        assert {served_by(fleet) for _ in range(6)} == {"g1w0", "g1w1"}
