"""``--worker-timeout``: a worker whose event loop is blocked is killed and replaced; a busy but
healthy one never is; a ``--cmd`` worker is judged by ``--health-path``."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from support import ROOT, http_get, wait_until
from up_helpers import up

PY = sys.executable
STUCK_APP = str(ROOT / "tests" / "apps" / "stuck.py")


def metric(fleet_port: int, name: str, worker: str) -> float | None:
    body = http_get(f"http://127.0.0.1:{fleet_port}/metrics")[2].decode()
    match = re.search(rf'^{name}{{worker="{worker}"}} (\S+)$', body, re.M)
    return float(match.group(1)) if match else None


def block_in_background(url: str) -> threading.Thread:
    """GET ``url`` (it never answers: the worker is killed), without holding up the test."""

    def request() -> None:
        try:
            urllib.request.urlopen(url, timeout=30).read()
        except OSError:
            pass  # the worker was killed mid-request: expected

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    return thread


def test_worker_blocked_in_time_sleep_is_replaced_within_the_timeout_plus_2_s(tmp_path: Path) -> None:
    fleet = up(tmp_path, STUCK_APP, "--worker-timeout", "3", workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        wait_until(lambda: metric(fleet.port, "fleet_worker_event_loop_lag_seconds", "w0") is not None, 5,
                   message="lag gauge")
        before = fleet.worker("g1w0")
        request = block_in_background(f"http://127.0.0.1:{fleet.base_port}/block?seconds=3600")
        fleet.proc.wait_for_output(rf"g1w0:{fleet.base_port} \| blocking the event loop", 10)
        blocked_at = time.monotonic()
        # While it is stuck the gauge grows (the master computes it from the missing beats).
        # (A scrape reads every worker's process tree on the master's loop: not too often.)
        wait_until(lambda: (metric(fleet.port, "fleet_worker_event_loop_lag_seconds", "w0") or 0) > 1.0, 3,
                   interval=0.3, message="lag over 1 s")
        line = fleet.proc.wait_for_output(
            rf"g1w0:{fleet.base_port} event loop blocked for ([\d.]+) s \(--worker-timeout 3\): killing it", 3 + 2)
        killed_after = time.monotonic() - blocked_at
        assert 3 <= float(line.group(1)) < 4.5 and killed_after <= 3 + 1, (killed_after, fleet.proc.output())
        # Watched on fleet's output, not with `fleet status` polls: each status call reads every
        # worker's process tree with psutil on the master's loop, which would slow what is measured.
        ready = fleet.proc.wait_for_output(
            rf"g1w0:{fleet.base_port} ready \(pid (?!{before['pid']}\b)\d+, ([\d.]+) s\)", 20)
        replaced_after = time.monotonic() - blocked_at
        # The bound is --worker-timeout + 2 s. What fleet cannot speed up is the new worker's own
        # start (Python, tornado, the app: 0.6-1.1 s on the idle dev machine, more when other
        # jobs load its 2 cores), so the part of that start beyond 1.2 s is allowed on top.
        startup = float(ready.group(1))
        timeline = [line for line in fleet.proc.output().splitlines() if line.startswith("fleet | g1w0:")]
        assert replaced_after <= 3 + 2 + max(0.0, startup - 1.2), (killed_after, replaced_after, timeline)
        after = fleet.worker("g1w0")
        # Replaced on purpose, on its port and under its id: a recycle (reason hung), not a crash.
        assert after["restarts"] == 0 and after["last_exit"] == -signal.SIGKILL
        wait_until(lambda: re.search(r'^fleet_worker_recycles_total\{reason="hung"\} 1\.0$',
                                     http_get(f"http://127.0.0.1:{fleet.port}/metrics")[2].decode(), re.M),
                   3, message="one recycle for a hung worker in /metrics")
        assert fleet.worker("g1w1")["restarts"] == 0
        assert http_get(f"http://127.0.0.1:{fleet.port}/")[0] == 200
        request.join(timeout=5)


@pytest.mark.slow
def test_healthy_worker_under_load_is_never_killed(tmp_path: Path) -> None:
    fleet = up(tmp_path, STUCK_APP, "--worker-timeout", "2", workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        pid = fleet.worker("g1w0")["pid"]
        stop = time.monotonic() + 8  # four timeouts of back-to-back requests, 50 ms of CPU each
        answered = [0] * 4
        failures: list[str] = []

        def load(slot: int) -> None:
            while time.monotonic() < stop:
                status = http_get(f"http://127.0.0.1:{fleet.port}/busy?ms=50", timeout=10)[0]
                if status == 200:
                    answered[slot] += 1
                else:
                    failures.append(str(status))

        threads = [threading.Thread(target=load, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        lags = []
        while time.monotonic() < stop:
            lags.append(metric(fleet.port, "fleet_worker_event_loop_lag_seconds", "w0") or 0.0)
            time.sleep(0.5)
        for thread in threads:
            thread.join(timeout=20)
        assert not failures and sum(answered) > 50, (failures, answered)
        assert "killing it" not in fleet.proc.output(), fleet.proc.output()
        assert fleet.worker("g1w0")["pid"] == pid and fleet.worker("g1w0")["restarts"] == 0
        assert max(lags) < 2.0


def test_cmd_worker_that_stops_answering_its_health_path_is_replaced(tmp_path: Path) -> None:
    fleet = up(tmp_path, "--cmd", f"exec {PY} -m http.server --bind 127.0.0.1 {{port}}",
               "--health-path", "/", "--worker-timeout", "2", workers=1)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        before = fleet.worker("g1w0")
        # Stopped, the server still accepts connections (the kernel does) but never answers.
        os.killpg(before["pid"], signal.SIGSTOP)
        stopped_at = time.monotonic()
        fleet.proc.wait_for_output(
            rf"g1w0:{fleet.base_port} no 2xx answer from / for [\d.]+ s \(--worker-timeout 2\): killing it", 6)
        assert time.monotonic() - stopped_at <= 2 + 2, fleet.proc.output()
        wait_until(lambda: fleet.worker("g1w0")["pid"] not in (None, before["pid"])
                   and fleet.worker("g1w0")["state"] == "ready", 20, message="g1w0 replaced and ready")
        assert fleet.worker("g1w0")["last_exit"] == -signal.SIGKILL
        assert http_get(f"http://127.0.0.1:{fleet.base_port}/")[0] == 200
