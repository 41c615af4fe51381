"""``fleet up`` end to end through the built-in proxy: traffic, reload and stop without a failed
request, the proxy port checked before any worker starts, status counters from the proxy."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from support import EXAMPLES, free_port_range, port_open, wait_until
from up_helpers import Fleet, family, living, up

try:
    from fleet.balancer import Balancer  # type: ignore[attr-defined]  # noqa: F401
except ImportError:
    pytestmark = pytest.mark.skip(reason="fleet.balancer.Balancer is not in the tree yet")

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")
BOKEH_APP = str(EXAMPLES / "bokeh_random")


def proxied(fleet: Fleet, path: str = "/", timeout: float = 30.0) -> tuple[int, bytes]:
    """One request through the proxy on a fresh connection, no affinity cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Hammer:
    """Requests in a loop from a thread until stopped; records every outcome."""

    def __init__(self, request: Callable[[], tuple[int, bytes]]) -> None:
        self._request = request
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = self._request()
                self.outcomes.append(str(status))
            except (OSError, http.client.HTTPException) as exc:
                self.outcomes.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.outcomes


def test_tornado_app_through_the_proxy_reaches_every_worker(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"ready: open http://localhost:{fleet.port}/", timeout=60)
        seen = set()
        for _ in range(10):
            status, body = proxied(fleet)
            assert status == 200
            seen.add(re.match(rb"hello from (g\d+w\d)", body).group(1))  # type: ignore[union-attr]
        assert seen == {b"g1w0", b"g1w1"}
        status = fleet.status()
        assert status["proxy"] == f"http://localhost:{fleet.port}/"
        assert sum(w["requests"] for w in status["workers"]) >= 10
        assert all(w["connections"] == 0 for w in status["workers"])


def test_bokeh_app_through_the_proxy(tmp_path: Path) -> None:
    fleet = up(tmp_path, BOKEH_APP, workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"ready: open http://localhost:{fleet.port}/bokeh_random", timeout=90)
        status, body = proxied(fleet, "/bokeh_random")
        assert status == 200 and b"bokeh" in body.lower()
        fleet.proc.wait_for_output(r"g1w0:\d+ \| session created on g1w0", timeout=30)


def test_reload_fails_no_request(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        before = {w["id"]: w["pid"] for w in fleet.status()["workers"]}
        slow: list[tuple[int, bytes]] = []
        slow_thread = threading.Thread(target=lambda: slow.append(proxied(fleet, "/slow?seconds=1.5")))
        slow_thread.start()
        hammer = Hammer(lambda: proxied(fleet))
        try:
            result = fleet.cli("reload")
        finally:
            outcomes = hammer.stop()
            slow_thread.join(timeout=60)
        assert result.returncode == 0, result.stderr
        assert outcomes and set(outcomes) == {"200"}, [o for o in outcomes if o != "200"][:5]
        assert slow and slow[0][0] == 200
        after = fleet.status()["workers"]
        assert [(w["id"], w["state"]) for w in after if w["current"]] == [("g2w0", "ready"), ("g2w1", "ready")]
        assert not set(before.values()) & {w["pid"] for w in after if w["current"]}


def test_killed_worker_does_not_fail_requests(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        hammer = Hammer(lambda: proxied(fleet))
        try:
            wait_until(lambda: len(hammer.outcomes) > 20, 30, message="traffic flowing")
            os.kill(fleet.worker("g1w1")["pid"], signal.SIGKILL)
            wait_until(lambda: fleet.worker("g1w1")["restarts"] == 1 and fleet.worker("g1w1")["state"] == "ready",
                       10, message="w1 back")
            count = len(hammer.outcomes)
            wait_until(lambda: len(hammer.outcomes) > count + 20, 30, message="more traffic")
        finally:
            outcomes = hammer.stop()
        assert set(outcomes) == {"200"}, [o for o in outcomes if o != "200"][:5]


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        started = family(fleet.proc.pid)
        slow: list[tuple[int, bytes]] = []
        thread = threading.Thread(target=lambda: slow.append(proxied(fleet, "/slow?seconds=2")))
        thread.start()
        wait_until(lambda: fleet.worker("g1w0")["connections"] == 1, 10, message="request in flight")
        fleet.proc.signal(signal.SIGTERM)
        assert fleet.proc.wait(timeout=60) == 0
        thread.join(timeout=30)
        assert slow and slow[0][0] == 200 and b"slept 2" in slow[0][1]
        wait_until(lambda: not living(started), 5, message="every fleet process gone")
        assert not port_open(fleet.port)


def test_proxy_port_in_use_is_named_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        fleet = up(tmp_path, TORNADO_APP, workers=1, proxy=True, port=taken)
        with fleet.proc:
            assert fleet.proc.wait(timeout=30) == 1
            output = fleet.proc.output()
            assert f"{taken} is already in use by pid {os.getpid()}" in output
            assert not re.search(r"w0:\d+ (ready|\|)", output)
            assert not port_open(fleet.base_port)


@pytest.mark.slow
def test_scale_up_adds_the_new_worker_to_the_proxy(tmp_path: Path) -> None:
    fleet = up(tmp_path, TORNADO_APP, workers=1, proxy=True, base=free_port_range(2))  # room for w1
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        assert fleet.cli("scale", "2").returncode == 0
        seen = {proxied(fleet)[1].split()[2] for _ in range(10)}
        assert seen == {b"g1w0", b"g2w1"}  # a scale-up starts a generation of its own
        assert fleet.cli("scale", "1").returncode == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, body = proxied(fleet)
            assert status == 200 and body.split()[2] == b"g1w0"
