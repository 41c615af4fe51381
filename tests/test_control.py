"""The control socket and the commands that use it: status, reload, scale, down (and their signals)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

from fleet.control import ControlError, claim, format_status, request
from support import EXAMPLES, free_port_range, http_get, port_open, wait_until
from up_helpers import family, living, run_cli, up

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")
HTTP_SERVER = f"{sys.executable} -m http.server --bind 127.0.0.1 {{port}}"


def test_status_with_no_fleet_running_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    result = run_cli("status", "--control-socket", path)
    assert result.returncode == 1
    assert f"no fleet running at {path}" in result.stderr
    with pytest.raises(ControlError, match="no fleet running"):
        request(path, "status")


def test_status_table_and_json_of_a_running_fleet(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        assert stat.S_IMODE(os.stat(fleet.control).st_mode) == 0o600
        result = fleet.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        assert reply["desired"] == 2 and reply["pid"] == fleet.proc.pid
        rows = reply["workers"]
        assert [(w["id"], w["port"], w["state"], w["restarts"]) for w in rows] == [
            ("g1w0", fleet.base_port, "ready", 0), ("g1w1", fleet.base_port + 1, "ready", 0)]
        assert all(w["pid"] and w["rss"] > 1_000_000 and w["cpu_percent"] >= 0 for w in rows)
        table = fleet.cli("status")
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[1].split() == ["WORKER", "GEN", "PID", "PORT", "STATE", "UPTIME", "RESTARTS", "CONNS",
                                    "REQUESTS", "CPU%", "RSS"]
        assert lines[2].split()[:5] == ["g1w0", "1", str(rows[0]["pid"]), str(fleet.base_port), "ready"]


def test_format_status_renders_every_column() -> None:
    reply = {"pid": 1, "app": "app.py", "desired": 2, "proxy": "http://localhost:5006/", "time": 1000.0,
             "workers": [
                 {"id": "g1w0", "generation": 1, "pid": 42, "port": 5100, "state": "ready", "started_at": 1000.0 - 3725,
                  "restarts": 2, "connections": 3, "requests": 120, "cpu_percent": 12.345, "rss": 50 * 2**20},
                 {"id": "g2w1", "generation": 2, "pid": None, "port": 5101, "state": "backoff", "crash_looping": True,
                  "started_at": None, "restarts": 7, "connections": None, "requests": None,
                  "cpu_percent": None, "rss": None},
             ],
             "last_reload": {"generation": 3, "ok": False, "message": "reload failed: generation 3 could not start"}}
    text = format_status(reply)
    assert "2/2 workers, http://localhost:5006/" in text
    assert "last reload FAILED: reload failed: generation 3 could not start" in text
    assert "g1w0    1    42   5100  ready                    1h02m   2         3      120       12.3  50.0MiB" in text
    assert "backoff (crash-looping)" in text and text.splitlines()[-1].split()[-1] == "-"


def test_stale_socket_is_replaced_and_a_live_fleet_is_not(tmp_path: Path) -> None:
    stale = tmp_path / "fleet.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: what a killed fleet leaves behind
    claim(str(stale))
    assert not stale.exists()
    fleet = up(tmp_path, "--cmd", HTTP_SERVER, workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        second = up(tmp_path, "--cmd", HTTP_SERVER, workers=1)  # same control socket path
        with second.proc:
            assert second.proc.wait(timeout=30) == 1
            assert "another fleet is already running with control socket" in second.proc.output()
            assert not port_open(second.base_port)
        assert fleet.status()["workers"][0]["state"] == "ready"


def test_fleet_down_stops_gracefully(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", HTTP_SERVER, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        started = family(fleet.proc.pid)
        result = fleet.cli("down")
        assert result.returncode == 0 and "stopping fleet" in result.stdout
        assert fleet.proc.wait(timeout=60) == 0
        wait_until(lambda: not living(started), 5, message="every fleet process gone")
        assert not os.path.exists(fleet.control)


def test_no_proxy_reload_restarts_every_worker_one_at_a_time_on_its_port(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        before = {w["index"]: w["pid"] for w in fleet.status()["workers"]}
        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        assert "reloaded 2 workers in place (generation 2, --no-proxy)" in result.stdout
        after = fleet.status()["workers"]
        # A new generation on the same ports; a planned restart is not counted as a crash.
        assert [(w["id"], w["port"]) for w in after] == [("g2w0", fleet.base_port), ("g2w1", fleet.base_port + 1)]
        assert all(w["state"] == "ready" and w["pid"] != before[w["index"]] and w["restarts"] == 0 for w in after)
        output = fleet.proc.output()
        # one at a time: w0 is ready again before w1 starts reloading
        assert output.index(f"g1w0:{fleet.base_port} reloading") < output.rindex(f"g2w0:{fleet.base_port} ready") \
            < output.index(f"g1w1:{fleet.base_port + 1} reloading")
        assert "crash" not in output and "restarting in" not in output
        # SIGHUP does the same
        fleet.proc.signal(signal.SIGHUP)
        wait_until(lambda: all(w["id"].startswith("g3") and w["state"] == "ready" for w in fleet.status()["workers"]),
                   60, message="HUP reload done")
        for index in range(2):
            assert http_get(f"http://127.0.0.1:{fleet.base_port + index}/")[0] == 200


def test_scale_up_and_down_live_by_command_and_by_signal(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", HTTP_SERVER, workers=1, base=free_port_range(3))  # room to scale
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        result = fleet.cli("scale", "3")
        assert result.returncode == 0, result.stderr
        assert "scaled to 3 workers (3 ready)" in result.stdout
        # Workers added by a scale-up are a generation of their own.
        assert [w["id"] for w in fleet.status()["workers"]] == ["g1w0", "g2w1", "g2w2"]
        assert http_get(f"http://127.0.0.1:{fleet.base_port + 2}/")[0] == 200
        w2_pid = fleet.worker("g2w2")["pid"]
        result = fleet.cli("scale", "1")
        assert result.returncode == 0, result.stderr
        status = fleet.status()
        assert status["desired"] == 1 and [w["id"] for w in status["workers"]] == ["g1w0"]
        wait_until(lambda: not living(family(w2_pid)), 5, message="w2 gone")
        assert not port_open(fleet.base_port + 2)
        fleet.proc.signal(signal.SIGTTIN)
        wait_until(lambda: fleet.all_ready(2), 30, message="TTIN adds w1")
        fleet.proc.signal(signal.SIGTTOU)
        wait_until(lambda: len(fleet.status()["workers"]) == 1, 30, message="TTOU removes w1")
        fleet.proc.signal(signal.SIGTTOU)  # never below one worker
        fleet.proc.wait_for_output(r"SIGTTOU ignored", timeout=10)
        assert fleet.all_ready(1)


def test_max_memory_restarts_a_worker_gracefully(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", HTTP_SERVER, "--max-memory", "1MiB", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        first_pid = fleet.worker("g1w0")["pid"]
        fleet.proc.wait_for_output(r"g1w0:\d+ restarting in place \(max_memory: its processes use \d+ MiB, "
                                   r"more than --max-memory 1 MiB; --no-proxy\)", timeout=30)
        wait_until(lambda: fleet.status()["recycles"].get("max_memory", 0) >= 1 and fleet.worker("g1w0")["state"] == "ready"
                   and fleet.worker("g1w0")["pid"] != first_pid, 30, message="w0 restarted")
        assert fleet.worker("g1w0")["restarts"] == 0  # a recycle, not a crash
        assert "crash" not in fleet.proc.output()


def test_format_status_shows_each_proxy_process_with_two_or_more() -> None:
    workers = [{"id": "g1w0", "generation": 1, "pid": 42, "port": 5100, "state": "ready", "started_at": 990.0}]
    proxies = [
        {"row": 0, "pid": 4242, "state": "serving", "serving": True, "started_at": 1000.0 - 125,
         "restarts": 0, "connections": 7, "requests": 1200},
        {"row": 1, "pid": None, "state": "restarting", "serving": False, "started_at": None,
         "restarts": 3, "connections": 0, "requests": 0},
    ]
    reply = {"pid": 1, "app": "app.py", "desired": 1, "proxy": "http://127.0.0.1:8000/", "time": 1000.0,
             "data_plane": {"kind": "builtin"}, "workers": workers, "proxies": proxies}
    lines = format_status(reply).splitlines()
    assert lines[1] == "data plane: built-in proxy, 2 processes on one port (SO_REUSEPORT), 1 serving"
    assert lines[2].split() == ["PROXY", "PID", "STATE", "UPTIME", "RESTARTS", "CONNS", "REQUESTS"]
    assert lines[3] == "p0     4242  serving     2m05s   0         7      1200"
    assert lines[4].split() == ["p1", "-", "restarting", "-", "3", "0", "0"]
    assert lines[5].split()[0] == "WORKER" and lines[6].split()[0] == "g1w0"
    # One proxy process (the JSON has no list then) or none: no proxy rows.
    for single in (None, proxies[:1]):
        text = format_status({**reply, "proxies": single})
        assert "PROXY" not in text and "data plane" not in text
