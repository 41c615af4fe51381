"""``fleet up --proxy-processes 2`` on real sockets: exact totals, fleet-wide least-connections,
affinity, and a ``kill -9`` of one proxy process under load.

The kernel spreads connections over the two ``SO_REUSEPORT`` listeners by a hash of the
4-tuple; a test that needs a connection on a given process opens connections until each
process holds enough of them, and asks psutil which process holds which.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from support import wait_until
from up_helpers import Fleet, family, living, up

BACKEND = str(Path(__file__).parent / "apps" / "backend.py")


@contextlib.contextmanager
def two_proxy_processes(tmp_path: Path, graceful_timeout: str) -> Iterator[Fleet]:
    """Two workers behind two serving proxy processes; stopped (if the test did not) and every
    process of its tree gone afterwards."""
    started = up(tmp_path, BACKEND, "--proxy-processes", "2", "--graceful-timeout", graceful_timeout,
                 workers=2, proxy=True)
    everyone: list[psutil.Process] = []
    try:
        wait_until(lambda: started.all_ready(2), timeout=60, message="2 ready workers")
        wait_until(lambda: all(p["serving"] for p in started.status()["proxies"]), timeout=30,
                   message="2 serving proxy processes")
        everyone = family(started.proc.pid)
        yield started
    finally:
        started.proc.stop()
    wait_until(lambda: not living(everyone), timeout=20, message="every process of the fleet gone")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with two_proxy_processes(tmp_path, "2") as started:
        yield started


def proxy_pids(fleet: Fleet) -> list[int]:
    pids = [p["pid"] for p in fleet.status()["proxies"]]
    assert len(pids) == 2 and all(pids)
    return pids


def connection(fleet: Fleet) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=30)
    conn.connect()
    return conn


def owners(pids: list[int]) -> dict[int, int]:
    """Client port -> the proxy process holding the other end."""
    found = {}
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                found[conn.raddr.port] = pid
    return found


def split_connections(fleet: Fleet, each: int) -> tuple[int, int, dict[int, list[http.client.HTTPConnection]]]:
    """Keep-alive connections, at least ``each`` on each proxy process: (pid a, pid b, by pid)."""
    pids = proxy_pids(fleet)
    by_pid: dict[int, list[http.client.HTTPConnection]] = {pid: [] for pid in pids}
    opened: list[http.client.HTTPConnection] = []
    for _ in range(200):
        if all(len(conns) >= each for conns in by_pid.values()):
            break
        conn = connection(fleet)
        local = conn.sock.getsockname()[1]
        owner = wait_until(lambda: owners(pids).get(local), timeout=10, message="the connection accepted")
        if len(by_pid[owner]) < each:  # type: ignore[index]
            by_pid[owner].append(conn)  # type: ignore[index]
        else:
            opened.append(conn)
    for extra in opened:
        extra.close()
    assert all(len(conns) >= each for conns in by_pid.values()), "the kernel sent every connection to one process"
    return pids[0], pids[1], by_pid


def get(conn: http.client.HTTPConnection, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read().decode(), response


def requests_total(fleet: Fleet) -> int:
    conn = connection(fleet)
    try:
        status, body, _ = get(conn, "/metrics")
    finally:
        conn.close()
    assert status == 200
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
               if line.startswith("fleet_requests_total{"))


def in_flight(fleet: Fleet) -> list[int]:
    return sorted(w["connections"] for w in fleet.status()["workers"])


def test_requests_total_is_exact_over_a_thousand_requests_through_both_processes(fleet: Fleet) -> None:
    failures: list[str] = []

    def client(count: int) -> None:
        conn = None
        for index in range(count):
            if index % 5 == 0:  # a new connection now and then: the kernel spreads them
                if conn is not None:
                    conn.close()
                conn = connection(fleet)
            status, _, _ = get(conn)  # type: ignore[arg-type]
            if status != 200:
                failures.append(str(status))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(125,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    wait_until(lambda: requests_total(fleet) == 1000, timeout=10, message="fleet_requests_total == 1000")
    proxies = fleet.status()["proxies"]
    assert sum(p["requests"] for p in proxies) == 1000
    assert all(p["requests"] > 0 for p in proxies), proxies  # both processes served
    assert sum(w["requests"] for w in fleet.status()["workers"]) == 1000
    time.sleep(1.5)  # a later render must not count anything twice
    assert requests_total(fleet) == 1000


@pytest.mark.slow
def test_least_connections_counts_the_other_processes_requests(fleet: Fleet) -> None:
    """Three slow requests through process A leave loads {1, 2}; the next one, through B, must
    go to the worker with 1: B's own counts are {0, 0} and would not know."""
    a, b, by_pid = split_connections(fleet, 3)
    for conn in by_pid[a]:
        conn.request("GET", "/slow?seconds=20")
    wait_until(lambda: in_flight(fleet) == [1, 2], timeout=10, message="loads {1, 2} after A's requests")
    expected = [[2, 2], [2, 3], [3, 3]]
    for conn, loads in zip(by_pid[b], expected):
        conn.request("GET", "/slow?seconds=20")
        wait_until(lambda: in_flight(fleet) == loads, timeout=10, message=f"loads {loads} through B")
    for conns in by_pid.values():
        for conn in conns:
            conn.close()


def test_affinity_holds_across_both_processes(fleet: Fleet) -> None:
    conn = connection(fleet)
    status, body, response = get(conn)
    conn.close()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    worker = body.split()[2]
    assert cookie == f"fleet_affinity={worker}"
    before: dict[int, int] = wait_until(  # type: ignore[assignment]
        lambda: (rows := {p["row"]: p["requests"] for p in fleet.status()["proxies"]}) and sum(rows.values()) == 1
        and rows, timeout=10, message="the first request counted")
    for _ in range(40):
        conn = connection(fleet)
        status, body, _ = get(conn, headers={"Cookie": cookie})
        conn.close()
        assert status == 200 and body.split()[2] == worker
    after = wait_until(lambda: (rows := {p["row"]: p["requests"] for p in fleet.status()["proxies"]})
                       and sum(rows.values()) - sum(before.values()) == 40 and rows, timeout=10,
                       message="40 more requests counted")
    assert all(after[row] > before[row] for row in after), (before, after)  # type: ignore[index]


@pytest.mark.slow
def test_kill_9_of_a_proxy_process_loses_only_its_connections_and_it_is_back_within_2s(fleet: Fleet) -> None:
    a, b, by_pid = split_connections(fleet, 3)
    results: dict[int, list[tuple[float, bool]]] = {}
    stop = threading.Event()

    def load(conn: http.client.HTTPConnection) -> None:
        mine = results.setdefault(id(conn), [])
        while not stop.is_set():
            try:
                status, _, _ = get(conn)
                mine.append((time.monotonic(), status == 200))
            except (OSError, http.client.HTTPException):
                mine.append((time.monotonic(), False))
                return  # its connection is gone

    threads = [threading.Thread(target=load, args=(conn,)) for conns in by_pid.values() for conn in conns]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: requests_total(fleet) >= 50, timeout=20, message="load through both processes")
        row_a = next(p["row"] for p in fleet.status()["proxies"] if p["pid"] == a)
        before = requests_total(fleet)
        killed_at = time.monotonic()
        os.kill(a, signal.SIGKILL)
        back = wait_until(lambda: (p := fleet.status()["proxies"][row_a])["serving"] and p["pid"] not in (None, a)
                          and time.monotonic(), timeout=5, interval=0.02, message="proxy process back")
        assert back - killed_at < 2.0, f"back after {back - killed_at:.2f} s"  # type: ignore[operator]
        time.sleep(0.5)  # B keeps serving meanwhile
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    for conn in by_pid[b]:
        outcomes = results[id(conn)]
        assert outcomes and all(ok for _, ok in outcomes), "a request on the surviving process failed"
        assert any(at > killed_at for at, _ in outcomes)
    for conn in by_pid[a]:
        assert not results[id(conn)][-1][1]  # its connection died with it
    after = wait_until(lambda: (total := requests_total(fleet)) >= before and total, timeout=10,
                       message="counters not below their value before the kill")
    assert after >= before  # type: ignore[operator]
    for _ in range(20):  # new connections reach both processes again and all succeed
        conn = connection(fleet)
        assert get(conn)[0] == 200
        conn.close()
    for conn in [*by_pid[a], *by_pid[b]]:
        conn.close()


def test_kill_9_zeroes_the_dead_processes_gauges(fleet: Fleet) -> None:
    a, b, by_pid = split_connections(fleet, 2)
    for conn in [*by_pid[a][:2], *by_pid[b][:1]]:
        conn.request("GET", "/slow?seconds=20")
    wait_until(lambda: sum(in_flight(fleet)) == 3, timeout=10, message="3 requests in flight")
    os.kill(a, signal.SIGKILL)
    wait_until(lambda: sum(in_flight(fleet)) == 1, timeout=5, message="A's 2 requests no longer counted")
    for conns in by_pid.values():
        for conn in conns:
            conn.close()
