"""Stopping ``fleet up`` at any moment of its start-up ends it promptly and leaves nothing.

The race this guards against: a readiness probe cancelled by the supervisor
could swallow its cancellation (``asyncio.wait_for`` on Python 3.11, CPython gh-86296), keep
polling until --start-timeout, and hold the event loop's shutdown hostage. It showed only
under load and at unlucky moments, so this test makes both happen on purpose: several fleets
of several probing workers start side by side next to a CPU hog, and each is stopped at a
different point of its start-up. Before the fix about one worker probe in thirty lost its
cancellation; this test runs about 300 of them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import free_port, free_port_range, start_fleet, wait_until
from up_helpers import family, living

PY = sys.executable
ROUNDS = 6
FLEETS_PER_ROUND = 4
WORKERS = 12
# Long enough that a probe which lost its cancellation would keep fleet alive past EXIT_WITHIN.
START_TIMEOUT = 60
EXIT_WITHIN = 15.0


def _cpu_hog() -> subprocess.Popen[bytes]:
    """A busy loop beside the fleets: the race needs the loop to be slow to run callbacks."""
    return subprocess.Popen([PY, "-c", "import time\nend = time.monotonic() + 300\n"
                                       "while time.monotonic() < end: pass"],
                            stdin=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_sigterm_at_any_point_of_start_up_exits_promptly_and_leaves_nothing(tmp_path: Path) -> None:
    hog = _cpu_hog()
    try:
        for round_number in range(ROUNDS):
            fleets = []
            for index in range(FLEETS_PER_ROUND):
                base = free_port_range(WORKERS)
                control = tmp_path / f"r{round_number}f{index}.sock"
                fleets.append(start_fleet(
                    "up", "--cmd", "sleep 30", "-n", str(WORKERS), "--no-proxy",
                    "--base-port", str(base), "--port", str(free_port()),
                    "--start-timeout", str(START_TIMEOUT), "--control-socket", str(control),
                    cwd=str(tmp_path)))
            try:
                started = []
                for index, fleet in enumerate(fleets):
                    fleet.wait_for_output(r"fleet \S+ \(pid", timeout=30)
                    # Stop each fleet at another point: while spawning, while probing.
                    time.sleep(0.05 * ((round_number * FLEETS_PER_ROUND + index) % 8))
                    started.append(family(fleet.pid))
                    fleet.signal(signal.SIGTERM)
                deadline = time.monotonic() + EXIT_WITHIN
                for fleet in fleets:
                    try:
                        code = fleet.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        raise AssertionError(
                            f"fleet did not exit within {EXIT_WITHIN:g} s of SIGTERM while starting:\n"
                            f"{fleet.output()}") from None
                    assert code == 0, fleet.output()
                for fleet in fleets:
                    fleet.wait_for_output("stopped before all workers were ready", timeout=5)
                processes = [process for group in started for process in group]
                wait_until(lambda: not living(processes), 5, message="every process of every fleet gone")
            finally:
                for fleet in fleets:
                    fleet.stop(timeout=1)
    finally:
        hog.kill()
        hog.wait()
