"""``fleet up APP -n 2 --proxy-processes 2`` under operations, on real processes and sockets:
``fleet reload`` under keep-alive load carried by both proxy processes, a graceful stop
(``fleet down``, SIGTERM) with slow requests in flight on both, and ``fleet status`` showing
each proxy process.

Connections are spread over the two ``SO_REUSEPORT`` listeners by the kernel; the helpers of
``test_proxy_processes_e2e`` open connections until each process holds enough of them.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from fleet.control import request
from support import alive, port_open, wait_until
from test_proxy_processes_e2e import get, in_flight, split_connections, two_proxy_processes
from up_helpers import Fleet, family, living


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with two_proxy_processes(tmp_path, "30") as started:
        yield started


def proxy_rows(fleet: Fleet) -> dict[int, dict]:
    return {p["row"]: p for p in fleet.status()["proxies"]}


class KeepAliveLoad:
    """One thread per connection, GETs in a loop on that same connection (never a new one):
    each result is (sent at, status or the error, worker id)."""

    def __init__(self, connections: list[http.client.HTTPConnection]) -> None:
        self.results: list[list[tuple[float, object, str | None]]] = [[] for _ in connections]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(conn, mine), daemon=True)
                         for conn, mine in zip(connections, self.results)]
        for thread in self._threads:
            thread.start()

    def _run(self, conn: http.client.HTTPConnection, mine: list[tuple[float, object, str | None]]) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, body, _ = get(conn)
            except (OSError, http.client.HTTPException) as exc:
                mine.append((sent, repr(exc), None))
                return  # a failure: the test fails on it, no reconnect hides it
            mine.append((sent, status, body.split()[2] if status == 200 else body[:200]))

    def each_sent_after(self, moment: float, count: int) -> bool:
        return all(sum(1 for sent, _, _ in mine if sent > moment) >= count for mine in self.results)

    def stop(self) -> list[tuple[float, object, str | None]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread hung"
        return [result for mine in self.results for result in mine]


class ProxySampler:
    """``fleet status`` every 50 ms: each proxy process's pid, state, restarts and requests."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.samples: list[dict[int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(proxy_rows(self.fleet))

    def stop(self) -> list[dict[int, dict]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


@pytest.mark.slow
def test_reload_under_keep_alive_load_on_both_proxy_processes(fleet: Fleet) -> None:
    """No request fails; every request sent after ``fleet reload`` answered reaches generation 2;
    generation 1 drains and exits; both proxy processes keep their pids, and their request
    counts only grow, up to exactly the requests sent."""
    before = proxy_rows(fleet)
    pids = {row: p["pid"] for row, p in before.items()}
    old_workers = {w["id"]: w["pid"] for w in fleet.status()["workers"]}
    assert set(old_workers) == {"g1w0", "g1w1"}
    a, b, by_pid = split_connections(fleet, 3)
    connections = [*by_pid[a], *by_pid[b]]
    sampler = ProxySampler(fleet)
    load = KeepAliveLoad(connections)
    try:
        wait_until(lambda: load.each_sent_after(0.0, 5), timeout=30, message="load on every connection")
        result = fleet.cli("reload")
        reloaded_at = time.monotonic()
        assert result.returncode == 0, result.stderr
        assert "generation 2 ready" in result.stdout and "generation 1 draining" in result.stdout
        wait_until(lambda: set(w["id"] for w in fleet.status()["workers"]) == {"g2w0", "g2w1"}, timeout=30,
                   message="generation 1 drained and removed")
        wait_until(lambda: not any(alive(pid) for pid in old_workers.values()), timeout=10,
                   message="generation 1's processes exited")
        wait_until(lambda: load.each_sent_after(reloaded_at, 20),
                   timeout=30, message="20 requests on every connection after the reload")
    finally:
        outcomes = load.stop()
    failed = [o for o in outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert {worker for _, _, worker in outcomes if worker and worker.startswith("g1")} == {"g1w0", "g1w1"}
    late = {worker for sent, _, worker in outcomes if sent > reloaded_at}
    assert late == {"g2w0", "g2w1"}, late  # nothing after the reload's answer reached generation 1
    total = len(outcomes)
    final = wait_until(lambda: (rows := proxy_rows(fleet)) and sum(p["requests"] for p in rows.values())
                       - sum(p["requests"] for p in before.values()) == total and rows, timeout=10,
                       message=f"the proxy processes' counts up by {total}")
    samples = [*sampler.stop(), final]
    for row, pid in pids.items():
        assert final[row]["requests"] - before[row]["requests"] >= 3 * 20  # type: ignore[index]
        assert all(s[row]["pid"] == pid and s[row]["state"] == "serving" and s[row]["restarts"] == 0
                   for s in samples), f"proxy process {row} was replaced or stopped serving"
        counts = [before[row]["requests"], *(s[row]["requests"] for s in samples)]
        assert counts == sorted(counts), f"proxy process {row}'s request count went back: {counts}"
    for conn in connections:
        conn.close()


@pytest.mark.slow
def test_a_request_sent_the_moment_reload_answers_reaches_generation_2_in_both_processes(fleet: Fleet) -> None:
    """The reload's answer waits until every proxy process applied "draining" (a sync round
    trip): without it, requests sent at once on open connections still reached generation 1
    (the master had set it draining, the proxy processes had not read it yet)."""
    a, b, by_pid = split_connections(fleet, 3)
    connections = [*by_pid[a], *by_pid[b]]
    for conn in connections:
        assert get(conn)[0] == 200  # the connections are open and idle, on both processes
    request(fleet.control, "reload")  # what `fleet reload` sends, without a CLI's exit in between
    for conn in connections:
        conn.request("GET", "/")
    workers = []
    for conn in connections:
        response = conn.getresponse()
        assert response.status == 200
        workers.append(response.read().split()[2].decode())
        conn.close()
    assert all(worker.startswith("g2w") for worker in workers), workers


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fleet down", "SIGTERM"])
def test_graceful_stop_finishes_in_flight_requests_on_both_processes_and_leaves_nothing(
        fleet: Fleet, how: str) -> None:
    a, b, by_pid = split_connections(fleet, 2)
    slow = [*by_pid[a][:2], *by_pid[b][:2]]
    for conn in by_pid[a][2:] + by_pid[b][2:]:
        conn.close()
    everyone = family(fleet.proc.pid)
    pids = {p.pid for p in everyone}
    assert {a, b} <= pids and {w["pid"] for w in fleet.status()["workers"]} <= pids
    answers: list[tuple[float, int, str]] = []

    def request(conn: http.client.HTTPConnection) -> None:
        status, body, _ = get(conn, "/slow?seconds=6")
        answers.append((time.monotonic(), status, body))

    threads = [threading.Thread(target=request, args=(conn,), daemon=True) for conn in slow]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(in_flight(fleet)) == 4, timeout=10, message="4 slow requests in flight")
    if how == "fleet down":
        result = fleet.cli("down")
        assert result.returncode == 0, result.stderr
    else:
        fleet.proc.signal(signal.SIGTERM)
    refused_at = wait_until(lambda: refused(fleet.port) and time.monotonic(), timeout=5,
                            message="new connections refused")
    for _ in range(5):  # and they stay refused, on both listeners' hashes, while requests finish
        assert refused(fleet.port)
    assert [p["state"] for p in fleet.status()["proxies"]] == ["stopping", "stopping"]
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 4 and all(status == 200 and body.startswith("slow from g1w") for _, status, body in answers), answers
    assert all(done > refused_at for done, _, _ in answers)  # they were in flight when refusals began
    assert fleet.proc.wait(timeout=30) == 0
    wait_until(lambda: not living(everyone), timeout=10, message="every process of the fleet gone")
    for pid in (a, b):
        assert not psutil.pid_exists(pid) or not alive(pid)
    assert not port_open(fleet.port) and not os.path.exists(fleet.control)
    assert "still had connections" not in fleet.proc.output() and "killing" not in fleet.proc.output()
    for conn in slow:
        conn.close()


def test_status_text_shows_each_proxy_process(fleet: Fleet) -> None:
    a, b, by_pid = split_connections(fleet, 2)
    for conn in by_pid[a] + by_pid[b]:
        assert get(conn)[0] == 200
    held = {a: len(by_pid[a]), b: len(by_pid[b])}
    rows = wait_until(lambda: (rows := fleet.status()["proxies"]) and {p["pid"]: p["connections"] for p in rows}
                      == held and sum(p["requests"] for p in rows) == sum(held.values()) and rows,
                      timeout=10, message=f"connections {held} counted")
    text = fleet.cli("status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[1] == "data plane: built-in proxy, 2 processes on one port (SO_REUSEPORT), 2 serving"
    assert lines[2].split() == ["PROXY", "PID", "STATE", "UPTIME", "RESTARTS", "CONNS", "REQUESTS"]
    for line, row in zip(lines[3:5], rows):  # type: ignore[arg-type]
        cells = line.split()
        assert cells[:3] == [f"p{row['row']}", str(row["pid"]), "serving"], line
        assert cells[3].endswith("s") and cells[4:] == ["0", str(row["connections"]), str(row["requests"])], line
    assert lines[5].split()[0] == "WORKER"
    for conns in by_pid.values():
        for conn in conns:
            conn.close()
