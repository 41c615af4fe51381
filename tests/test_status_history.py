"""The status page's numbers without a fleet: rates, the bounded history, the exit log, the
JSON document; and one walk of a real process tree (``trees_usage``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hypothesis import given, strategies as st

from fleet.status_history import (
    Exit, ExitLog, History, Point, Traffic, Usage, document, rates, totals, worker_row,
)
from fleet.status_page import app_label
from fleet.supervisor.info import WorkerChange, WorkerInfo
from fleet.supervisor.usage import trees_usage


def info(state: str, *, worker: str = "g1w0", pid: int | None = 100, started_at: float | None = 1000.0,
         last_exit: int | None = None, restarts: int = 0) -> WorkerInfo:
    return WorkerInfo(index=0, id=worker, port=5100, pid=pid, state=state, started_at=started_at,
                      restarts=restarts, crash_looping=False, last_exit=last_exit, generation=1, slot="w0")


def test_rates_are_increase_per_second_with_new_keys_from_zero_and_resets_counting_anew() -> None:
    before = {"g1w0": 100, "g1w1": 50, "gone": 7}
    after = {"g1w0": 120, "g1w1": 10, "new": 6}
    assert rates(before, after, 2.0) == {"g1w0": 10.0, "g1w1": 5.0, "new": 3.0}
    assert rates(before, after, 0.0) == {}


@given(st.dictionaries(st.text(max_size=3), st.integers(0, 10**9)),
       st.dictionaries(st.text(max_size=3), st.integers(0, 10**9)),
       st.floats(0.001, 1000))
def test_rates_are_never_negative_and_cover_exactly_the_later_keys(before: dict[str, int], after: dict[str, int],
                                                                  seconds: float) -> None:
    result = rates(before, after, seconds)
    assert set(result) == set(after)
    assert all(value >= 0 for value in result.values())


def test_history_keeps_only_the_last_points_and_gives_them_column_wise() -> None:
    history = History(size=3)
    for second in range(5):
        history.add(Point(float(second), second * 1.25, second, 0, 10.0, 1 << 20, 2))
    columns = history.columns()
    assert columns["time"] == [2.0, 3.0, 4.0]
    assert columns["requests_per_second"] == [2.5, 3.8, 5.0]
    assert set(columns) == {"time", "requests_per_second", "connections", "websockets", "cpu_percent", "rss", "ready"}


def test_exit_log_lists_crashes_not_stops_fleet_asked_for_and_stays_bounded() -> None:
    log = ExitLog(size=2)
    last: dict[str, WorkerInfo] = {}

    def observe(after: WorkerInfo, now: float) -> Exit | None:
        # What the supervisor announces: each snapshot with the one announced before it.
        change = WorkerChange(last.get(after.id), after)
        last[after.id] = after
        return log.observe(change, now)

    assert observe(info("ready", pid=100), 1000.0) is None
    crash = observe(info("exited", pid=None, last_exit=-9), 1012.5)
    assert crash is not None and (crash.pid, crash.code, crash.signal, crash.lived) == (100, None, "SIGKILL", 12.5)
    assert observe(info("exited", pid=None, last_exit=-9), 1013.0) is None  # the same exit again
    observe(info("ready", pid=101, worker="g1w1"), 1014.0)
    observe(info("stopping", pid=101, worker="g1w1"), 1015.0)  # reload, scale-down: asked for
    assert observe(info("exited", pid=None, worker="g1w1", last_exit=0), 1016.0) is None
    for pid in (200, 201, 202):
        observe(info("starting", pid=pid), 1020.0)
        observe(info("exited", pid=None, last_exit=3), 1021.0)
    assert [(e.pid, e.code) for e in log.exits] == [(201, 3), (202, 3)]
    first = log.observe(WorkerChange(None, info("exited", pid=None, last_exit=1)), 1040.0)
    assert first is not None and (first.pid, first.lived) == (None, None)  # never seen running


def test_a_sample_becomes_rows_totals_and_a_compact_json_document() -> None:
    ready = info("ready", pid=100, restarts=2)
    backoff = info("backoff", worker="g1w1", pid=None, started_at=None)
    rows = [worker_row(ready, 1060.0, Usage(3.0, 50 << 20), 12.345, Traffic(40, 2, 1), 4.56),
            worker_row(backoff, 1060.0, None, None, Traffic(0, 0, 0), 0.0)]
    assert rows[0]["uptime"] == 60.0 and rows[0]["cpu_percent"] == 12.3 and rows[0]["requests_per_second"] == 4.6
    assert rows[1]["uptime"] is None and rows[1]["rss"] is None and rows[1]["cpu_percent"] is None
    point = totals(1060.0, rows, proxy=True)
    assert (point.requests_per_second, point.connections, point.websockets, point.ready) == (4.6, 2, 1, 1)
    assert totals(1060.0, rows, proxy=False).requests_per_second is None
    history = History()
    history.add(point)
    log = ExitLog()
    assert log.observe(WorkerChange(None, info("ready")), 1000.0) is None
    log.observe(WorkerChange(info("ready"), info("exited", pid=None, last_exit=1)), 1001.0)
    body = json.loads(document({"name": "web"}, rows, history, log, 2.0))
    assert body["name"] == "web" and body["interval"] == 2.0 and len(body["workers"]) == 2
    assert body["exits"] == [{"time": 1001.0, "worker": "g1w0", "pid": 100, "port": 5100, "code": 1,
                              "signal": None, "lived": 1.0}]
    assert body["history"]["ready"] == [1]


def test_trees_usage_counts_a_process_and_its_children_in_one_walk() -> None:
    script = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
             "print(c.pid, flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        readings = trees_usage([parent.pid, child, 2 ** 22 + 12345])
        assert set(readings) == {parent.pid, child}  # a gone pid is left out
        assert readings[parent.pid][1] > readings[child][1] > 0  # the parent's tree holds the child
        assert trees_usage([]) == {}
    finally:
        parent.kill()
        parent.wait()
        try:
            os.kill(child, 9)
        except (ProcessLookupError, UnboundLocalError):
            pass


def test_the_page_names_the_app_without_its_command_line() -> None:
    assert app_label("PGPASSWORD=x exec gunicorn --password hunter2 -b 127.0.0.1:$PORT", ()) == "--cmd gunicorn"
    assert app_label("/usr/bin/python3 -m http.server $PORT", ()) == "--cmd python3"
    assert app_label("'unbalanced", ()) == "--cmd 'unbalanced"
    assert app_label(None, ["/srv/shop/app.py", "/srv/dash/"]) == "app.py dash"
