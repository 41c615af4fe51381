"""``fleet up --no-proxy``: the supervised workers, started as the real command on free ports.

Every test ends what it starts (``with`` blocks stop fleet; fleet's own design kills workers
with the master), and most prove it by checking that no process fleet started is left.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import psutil

from support import EXAMPLES, free_port_range, http_get, port_open, wait_until
from up_helpers import family, living, processes_mentioning, up

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")
BOKEH_APP = str(EXAMPLES / "bokeh_random")
PY = sys.executable


def test_tornado_workers_answer_on_their_ports_and_sigterm_exits_0_leaving_nothing(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        for index in range(2):
            status, _, body = http_get(f"http://127.0.0.1:{fleet.base_port + index}/")
            assert status == 200 and body.decode() == f"hello from g1w{index} on port {fleet.base_port + index}\n"
        started = family(fleet.proc.pid)
        assert len(living(started)) >= 3  # master + 2 workers
        fleet.proc.signal(signal.SIGTERM)
        assert fleet.proc.wait(timeout=60) == 0
        wait_until(lambda: not living(started), 5, message="every fleet process gone")
        assert not port_open(fleet.base_port) and not port_open(fleet.base_port + 1)
        assert not os.path.exists(fleet.control)


def test_bokeh_app_page_is_served_by_a_worker(tmp_path: Path) -> None:
    fleet = up(tmp_path, BOKEH_APP, workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=90)
        status, _, body = http_get(f"http://127.0.0.1:{fleet.base_port}/bokeh_random", timeout=30)
        assert status == 200 and b"bokeh" in body.lower()
        # the page created a session; the example announces it on the worker's output
        fleet.proc.wait_for_output(rf"w0:{fleet.base_port} \| session created on g1w0 \(total 1\)", timeout=30)


def test_cmd_workers_get_their_port_via_placeholder(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", f"{PY} -m http.server --bind 127.0.0.1 {{port}}", workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        for index in range(2):
            assert http_get(f"http://127.0.0.1:{fleet.base_port + index}/")[0] == 200
        workers = fleet.status()["workers"]
        assert [(w["id"], w["port"], w["state"]) for w in workers] == [
            ("g1w0", fleet.base_port, "ready"), ("g1w1", fleet.base_port + 1, "ready")]


def test_killed_worker_is_back_on_the_same_port_within_two_seconds(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", f"{PY} -m http.server --bind 127.0.0.1 {{port}}", workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        before = fleet.worker("g1w1")
        os.kill(before["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: fleet.worker("g1w1")["pid"] not in (None, before["pid"]) and
                   fleet.worker("g1w1")["state"] == "ready", 2.0, interval=0.02, message="w1 ready again")
        assert time.monotonic() - killed_at < 2.0
        assert http_get(f"http://127.0.0.1:{fleet.base_port + 1}/")[0] == 200
        after = fleet.worker("g1w1")
        assert after["restarts"] == 1 and after["last_exit"] == -signal.SIGKILL
        assert fleet.worker("g1w0")["restarts"] == 0
        fleet.proc.wait_for_output(rf"w1:{fleet.base_port + 1} exited with code -9", timeout=5)


def test_crash_looping_worker_is_reported_with_growing_backoff_not_a_storm(tmp_path: Path) -> None:
    # Serves for 0.3 s, then dies: ready each time, so fleet keeps retrying (it started fine).
    server = (f"{PY} -c \"import http.server,threading,os; "
              f"s=http.server.HTTPServer(('127.0.0.1',int(os.environ['PORT'])),http.server.SimpleHTTPRequestHandler); "
              f"threading.Timer(0.3,lambda:os._exit(1)).start(); s.serve_forever()\"")
    fleet = up(tmp_path, "--cmd", server, workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        started = time.monotonic()
        fleet.proc.wait_for_output(r"crash-looping", timeout=30)
        wait_until(lambda: len(re.findall(r"restarting in", fleet.proc.output())) >= 5, 30,
                   message="five restarts")
        elapsed = time.monotonic() - started
        delays = [float(d) for d in re.findall(r"restarting in ([\d.]+) s", fleet.proc.output())]
        assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
        starts = len(re.findall(r"w0:\d+ ready", fleet.proc.output()))
        # A storm would restart hundreds of times; backoff allows about one start per delay.
        assert starts <= 2 + elapsed / 0.3
        wait_until(lambda: fleet.worker("g1w0")["crash_looping"], 10, message="status says crash-looping")


def test_second_sigint_stops_at_once(tmp_path: Path) -> None:
    # The worker ignores SIGTERM, so the graceful stop would wait the whole graceful timeout.
    fleet = up(tmp_path, "--cmd", f"trap '' TERM; exec {PY} -m http.server --bind 127.0.0.1 {{port}}",
               "--graceful-timeout", "120", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        started = family(fleet.proc.pid)
        fleet.proc.signal(signal.SIGINT)
        fleet.proc.wait_for_output(r"graceful stop", timeout=10)
        fleet.proc.signal(signal.SIGINT)
        began = time.monotonic()
        assert fleet.proc.wait(timeout=10) == 130
        assert time.monotonic() - began < 5
        wait_until(lambda: not living(started), 5, message="every fleet process gone")


def test_kill_9_of_the_master_takes_every_worker_and_its_children_within_two_seconds(tmp_path: Path) -> None:
    # `; true` keeps sh alive as the worker with python as its child: a grandchild of fleet.
    fleet = up(tmp_path, "--cmd", f"{PY} -m http.server --bind 127.0.0.1 {{port}}; true", workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        started = family(fleet.proc.pid)
        pythons = [p for p in started if "http.server" in " ".join(p.cmdline()) and p.name() != "sh"]
        assert len(pythons) >= 2 and all(p.ppid() != fleet.proc.pid for p in pythons)  # grandchildren
        watchdogs = processes_mentioning("fleet.supervisor.watchdog")
        os.kill(fleet.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: not living(started), 2.0, interval=0.02, message="workers and children gone")
        assert time.monotonic() - killed_at <= 2.0
        assert not port_open(fleet.base_port) and not port_open(fleet.base_port + 1)
        wait_until(lambda: not living([w for w in watchdogs if w.ppid() in (fleet.proc.pid, 1)]), 5,
                   message="watchdog exits after its work")


def test_worker_port_in_use_names_the_port_and_its_owner_and_starts_nothing(tmp_path: Path) -> None:
    base = free_port_range(2)
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", base + 1))
        blocker.listen()
        fleet = up(tmp_path, TORNADO_APP, workers=2, base=base)
        with fleet.proc:
            assert fleet.proc.wait(timeout=30) == 1
            output = fleet.proc.output()
            assert f"127.0.0.1:{base + 1} is already in use by pid {os.getpid()}" in output
            assert not re.search(r"w\d:\d+ (ready|\|)", output)  # no worker was started
            assert not port_open(base)


def test_missing_app_is_a_clear_error(tmp_path: Path) -> None:
    fleet = up(tmp_path, "no_such_app.py", workers=1)
    with fleet.proc:
        assert fleet.proc.wait(timeout=30) == 1
        assert "APP not found: 'no_such_app.py'" in fleet.proc.output()


def test_app_that_fails_to_import_shows_its_traceback_once_and_leaves_nothing(tmp_path: Path) -> None:
    app = tmp_path / "broken_app.py"
    app.write_text("import tornado.web\nimport no_such_module_for_fleet_test\n\n"
                   "def make_app():\n    return tornado.web.Application([])\n")
    fleet = up(tmp_path, str(app), workers=3)
    with fleet.proc:
        assert fleet.proc.wait(timeout=60) == 1
        output = fleet.proc.output()
        assert output.count("ModuleNotFoundError: No module named 'no_such_module_for_fleet_test'") == 1
        assert output.count("Traceback (most recent call last)") == 1
        assert re.search(r"error: worker g1w\d failed to start: the app cannot boot \(exit code 3\)", output)
        assert "restarting in" not in output
        wait_until(lambda: not processes_mentioning(str(app)), 5, message="no worker left")
        for index in range(3):
            assert not port_open(fleet.base_port + index)


def test_bokeh_script_that_does_not_compile_is_a_boot_error_too(tmp_path: Path) -> None:
    # Only a syntax error is found before a session runs the script (as with bokeh serve);
    # tests/test_bokeh_startup.py has the app whose code fails when it runs.
    app = tmp_path / "broken_plot.py"
    app.write_text("from bokeh.io import curdoc\nundefined_name_in_bokeh_app = (\ncurdoc()\n")
    fleet = up(tmp_path, str(app), workers=2)
    with fleet.proc:
        assert fleet.proc.wait(timeout=90) == 1
        output = fleet.proc.output()
        assert "(bokeh app)" in output
        assert output.count("SyntaxError: '(' was never closed") == 1
        assert "failed to start: the app cannot boot" in output
        wait_until(lambda: not processes_mentioning(str(app)), 5, message="no worker left")


def test_output_is_prefixed_and_log_dir_gets_one_file_per_worker(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    fleet = up(tmp_path, "--cmd", f"echo hello-$FLEET_WORKER_ID-of-$FLEET_WORKERS; "
                                  f"exec {PY} -m http.server --bind 127.0.0.1 {{port}}",
               "--log-dir", str(logs), workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        for index in range(2):
            fleet.proc.wait_for_output(rf"(?m)^g1w{index}:{fleet.base_port + index} \| hello-g1w{index}-of-2$", 10)
        http_get(f"http://127.0.0.1:{fleet.base_port + 1}/")
        fleet.proc.wait_for_output(rf"w1:{fleet.base_port + 1} \| .*\"GET / HTTP/1.1\" 200", 10)
        wait_until(lambda: "GET / HTTP/1.1" in (logs / "w1.log").read_text(), 10, message="w1.log")
        assert (logs / "w0.log").read_text().startswith("hello-g1w0-of-2\n")
        assert "hello-g1w0" not in (logs / "w1.log").read_text()


def test_worker_not_ready_within_start_timeout_fails_the_start(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", "sleep 60", "--start-timeout", "1", workers=1)
    with fleet.proc:
        assert fleet.proc.wait(timeout=30) == 1
        output = fleet.proc.output()
        assert re.search(r"worker g1w0 failed to start: not ready within --start-timeout 1 s", output)
        wait_until(lambda: not processes_mentioning("sleep 60"), 5, message="sleep killed")


def test_health_path_must_answer_2xx(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, "--health-path", "/missing", "--start-timeout", "3", workers=1)
    with fleet.proc:
        assert fleet.proc.wait(timeout=30) == 1
        assert "no a 2xx from /missing" in fleet.proc.output() or "2xx from /missing" in fleet.proc.output()
    fleet = up(tmp_path, TORNADO_APP, "--health-path", "/", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)


def test_workers_die_with_their_children_when_fleet_stops(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", f"{PY} -m http.server --bind 127.0.0.1 {{port}} & wait", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        started = family(fleet.proc.pid)
        assert any("http.server" in " ".join(p.cmdline()) for p in started)
        fleet.proc.signal(signal.SIGTERM)
        assert fleet.proc.wait(timeout=60) == 0
        wait_until(lambda: not living(started), 5, message="every process gone")
        assert psutil.pid_exists(fleet.proc.pid) is False or not living([psutil.Process(fleet.proc.pid)])


def test_metrics_port_in_use_fails_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        fleet = up(tmp_path, TORNADO_APP, "--metrics-port", str(taken), workers=1)
        with fleet.proc:
            assert fleet.proc.wait(timeout=30) == 1
            output = fleet.proc.output()
            assert f"metrics port 127.0.0.1:{taken} is already in use by pid {os.getpid()}" in output
            assert not re.search(r"w0:\d+ (ready|\|)", output)
            assert not port_open(fleet.base_port)


def test_signals_other_than_stop_do_not_abort_the_start(tmp_path: Path) -> None:
    # The worker takes 1.5 s to listen; a HUP in that window must not stop fleet.
    slow_start = f"sleep 1.5; exec {PY} -m http.server --bind 127.0.0.1 {{port}}"
    fleet = up(tmp_path, "--cmd", slow_start, workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"fleet 0\.1\.0 \(pid", timeout=30)
        fleet.proc.signal(signal.SIGHUP)
        fleet.proc.wait_for_output(r"SIGHUP ignored while fleet is starting", timeout=10)
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=30)
        assert fleet.proc.proc.poll() is None


def test_sigterm_while_starting_stops_and_leaves_nothing(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", f"sleep 30; exec {PY} -m http.server {{port}}", workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"fleet 0\.1\.0 \(pid", timeout=30)
        wait_until(lambda: len(living(family(fleet.proc.pid))) >= 3, 10, message="workers spawned")
        started = family(fleet.proc.pid)
        fleet.proc.signal(signal.SIGTERM)
        assert fleet.proc.wait(timeout=30) == 0
        assert "stopped before all workers were ready" in fleet.proc.output()
        wait_until(lambda: not living(started), 5, message="every process gone")
