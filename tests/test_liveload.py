"""The live-load harness (tests/liveload.py) counts what it must: wrk's summary read right, and a
WebSocket cut under it (its worker killed) reported as closed, so a reload or upgrade test that
asserts zeros can fail."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from liveload import Echo, LiveLoad, parse_wrk
from support import wait_until
from up_helpers import up

BACKEND = Path(__file__).resolve().parent / "apps" / "backend.py"

WRK_SUMMARY = """Running 1m test @ http://127.0.0.1:5000/
  1 threads and 4 connections
  1234 requests in 2.00s, 150.00KB read
  Socket errors: connect 2, read 3, write 1, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:    617.00
"""


def test_wrk_summary_is_read() -> None:
    requests, bad, errors = parse_wrk(WRK_SUMMARY)
    assert (requests, bad, errors) == (1234, 5, {"connect": 2, "read": 3, "write": 1, "timeout": 4})
    assert parse_wrk("  7 requests in 1.00s, 1KB read\n") == (7, 0, {})


def test_a_cut_websocket_and_nothing_else_is_counted(tmp_path: Path) -> None:
    shutil.copy(BACKEND, tmp_path / "backend.py")
    fleet = up(tmp_path, "backend.py", workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        load = LiveLoad(fleet.port, websockets=6, exchange=Echo("/ws"))
        with load:
            victim = fleet.status()["workers"][0]
            os.kill(victim["pid"], signal.SIGKILL)
            wait_until(lambda: fleet.worker(victim["id"])["pid"] not in (None, victim["pid"]), timeout=30)
            result = load.stop()
        assert result.requests > 0 and result.exchanges > 0
        assert 0 < result.websockets_closed < 6, result.summary()
        assert any("WebSockets closed" in line for line in result.failures())
