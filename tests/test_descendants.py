"""Every descendant dies with fleet: a worker's child that calls ``setsid`` (it leaves the
worker's process group and session) is gone after ``fleet down`` and after ``kill -9`` of the
master, and so is an orphan that came back to the master (a child subreaper). Reaping those
orphans never steals a worker's exit status.

Each sleeper carries a unique argv marker (``sleep 4321.<n>``), so the test finds exactly its own.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from support import ROOT, http_get, wait_until
from up_helpers import Fleet, processes_mentioning, up

PY = sys.executable
STUCK_APP = str(ROOT / "tests" / "apps" / "stuck.py")
_counter = itertools.count()


def marker() -> str:
    """A sleep duration no other process on the machine has in its argv."""
    mark = f"4321.{os.getpid()}{next(_counter):03d}{time.monotonic_ns() % 1000:03d}"
    _marks.append(mark)
    return mark


_marks: list[str] = []


@pytest.fixture(autouse=True)
def _no_sleeper_left() -> Iterator[None]:
    """A failing test must not leave its sleeper behind (fleet's own job, checked by the tests)."""
    yield
    while _marks:
        for process in sleepers(_marks.pop()):
            process.kill()


def sleepers(mark: str) -> list[psutil.Process]:
    """Live ``sleep MARK`` processes (not fleet or the shell, whose argv mention it too)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.info["cmdline"] == ["sleep", mark] and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def start_with_escaped_child(tmp_path: Path, kind: str, mark: str) -> Fleet:
    """A ready fleet with one sleeper outside every worker's process group (stopped on failure)."""
    if kind == "setsid-child":
        fleet = up(tmp_path, "--cmd", f"setsid sleep {mark} & exec {PY} -m http.server --bind 127.0.0.1 {{port}}")
    else:
        fleet = up(tmp_path, STUCK_APP)
    try:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        if kind == "setsid-child":
            # Found below its live worker: it will go with that worker, and with a killed master.
            fleet.proc.wait_for_output(r"g1w0:\d+: pid \d+ \(sleep\) left the worker's process group", timeout=10)
        else:
            assert http_get(f"http://127.0.0.1:{fleet.base_port}/orphan?arg={mark}")[0] == 200
            # Its parent shell is gone: without the subreaper it would belong to init, unseen.
            fleet.proc.wait_for_output(r"pid \d+ \(sleep\) was orphaned below fleet", timeout=10)
            [sleeper] = sleepers(mark)
            assert sleeper.ppid() == fleet.proc.pid
        assert len(sleepers(mark)) == 1
    except BaseException:
        fleet.proc.stop()
        for process in sleepers(mark):
            process.kill()
        raise
    return fleet


@pytest.mark.parametrize("kind", ["setsid-child", "orphan"])
def test_escaped_descendant_is_gone_after_fleet_down(tmp_path: Path, kind: str) -> None:
    mark = marker()
    fleet = start_with_escaped_child(tmp_path, kind, mark)
    with fleet.proc:
        result = fleet.cli("down")
        assert result.returncode == 0, result.stderr
        assert fleet.proc.wait(timeout=60) == 0
        wait_until(lambda: not sleepers(mark), 5, message=f"sleep {mark} gone")


@pytest.mark.parametrize("kind", ["setsid-child", "orphan"])
def test_escaped_descendant_is_gone_after_kill_9_of_the_master(tmp_path: Path, kind: str) -> None:
    mark = marker()
    fleet = start_with_escaped_child(tmp_path, kind, mark)
    with fleet.proc:
        os.kill(fleet.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: not sleepers(mark), 2.0, interval=0.02, message=f"sleep {mark} gone")
        assert time.monotonic() - killed_at <= 2.0


def test_setsid_child_spawned_just_before_kill_9_of_the_master_is_gone_too(tmp_path: Path) -> None:
    # No scan has (probably) seen it yet: the watchdog finds it by its FLEET_FAMILY marker.
    mark = marker()
    fleet = up(tmp_path, STUCK_APP)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        assert http_get(f"http://127.0.0.1:{fleet.base_port}/spawn?arg={mark}")[0] == 200
        os.kill(fleet.proc.pid, signal.SIGKILL)
        assert len(sleepers(mark)) <= 1
        wait_until(lambda: not sleepers(mark), 2.0, interval=0.02, message=f"sleep {mark} gone")


def test_setsid_child_goes_with_its_worker_when_the_worker_dies(tmp_path: Path) -> None:
    mark = marker()
    fleet = start_with_escaped_child(tmp_path, "setsid-child", mark)
    with fleet.proc:
        first = fleet.worker("g1w0")["pid"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not [p for p in sleepers(mark) if p.ppid() in (first, fleet.proc.pid)]
                   and fleet.worker("g1w0")["pid"] not in (None, first), 10, message="old sleeper gone, w0 back")
        # the new worker started its own sleeper; the old one did not pile up
        wait_until(lambda: len(sleepers(mark)) == 1, 10, message="one sleeper")


def test_orphans_are_reaped_and_worker_exit_codes_still_reported(tmp_path: Path) -> None:
    mark = f"1.{os.getpid()}{next(_counter):03d}"  # lives about a second, then exits by itself
    fleet = up(tmp_path, STUCK_APP, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        assert http_get(f"http://127.0.0.1:{fleet.base_port}/orphan?arg={mark}")[0] == 200
        master = psutil.Process(fleet.proc.pid)

        def zombie_children() -> list[psutil.Process]:
            return [c for c in master.children() if c.status() == psutil.STATUS_ZOMBIE]

        wait_until(lambda: not sleepers(mark), 5, message="the orphan exited")
        wait_until(lambda: not zombie_children(), 3, message="its zombie reaped by fleet")
        before = fleet.worker("g1w1")
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: fleet.worker("g1w1")["pid"] not in (None, before["pid"])
                   and fleet.worker("g1w1")["state"] == "ready", 10, message="w1 back")
        assert fleet.worker("g1w1")["last_exit"] == -signal.SIGKILL
        fleet.proc.wait_for_output(rf"w1:{fleet.base_port + 1} exited with code -9", timeout=5)
        # What the killed worker had started is orphaned to fleet and reaped on the reaper's next
        # scan, as the first orphan was: a zombie for a moment, not for good.
        wait_until(lambda: not zombie_children(), 3, message="the killed worker's orphans reaped")
