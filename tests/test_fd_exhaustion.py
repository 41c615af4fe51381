"""Running out of file descriptors never wedges the proxy: the drill of a real ``fleet up``
whose master may open only 256 descriptors, hit by 1,000 clients at once."""

from __future__ import annotations

import json
import resource
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psutil
import pytest

from support import wait_until
from up_helpers import Fleet, up

APP = str(Path(__file__).resolve().parent / "apps" / "slow_app.py")
LIMIT = 256
CLIENTS = 1000


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status_now(port: int) -> float:
    status, body = get(port, "/_fleet/status.json", timeout=5.0)
    assert status == 200
    return float(json.loads(body)["now"])


def shed(sock: socket.socket) -> bool:
    try:
        return sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith(b"HTTP/1.1 503")
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def storm(port: int, master: psutil.Process, control_answers: Callable[[], bool]) -> None:
    """CLIENTS connections, every third asking for a 3 s answer; once the master is at its
    limit (or every client is connected), all of them close."""
    clients = []
    try:
        for index in range(CLIENTS):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            clients.append(sock)
        deadline = time.monotonic() + 5.0
        pending = [sock for index, sock in enumerate(clients) if index % 3 == 0]
        while pending and time.monotonic() < deadline:
            left = []
            for sock in pending:
                try:
                    sock.send(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
                except (BlockingIOError, OSError):
                    left.append(sock)
            pending = left
        # The master is at its descriptor budget (it sheds clients: a 503, or a reset when
        # their request was unread): the state the drill is about. Its reserve keeps the
        # control socket answering meanwhile.
        wait_until(lambda: any(shed(sock) for sock in clients), timeout=10.0, message="the proxy sheds")
        assert master.num_fds() < LIMIT
        assert control_answers()
    finally:
        for sock in clients:
            sock.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, 2])
def test_out_of_descriptors_recovers(tmp_path: Path, processes: int) -> None:
    """One proxy (the master's loop) or ``--proxy-processes 2`` (each proxy process its own
    limit): the same budget, shedding and recovery."""
    extra = ("--proxy-processes", "2") if processes > 1 else ()
    fleet = up(tmp_path, APP, *extra, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        master = psutil.Process(fleet.proc.pid)
        limited = [fleet.proc.pid]
        if processes > 1:
            wait_until(lambda: all(p["serving"] for p in fleet.status()["proxies"]), timeout=30,
                       message="2 serving proxy processes")
            limited += [p["pid"] for p in fleet.status()["proxies"]]
        for pid in limited:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
        try:
            drill(fleet, master)
        except BaseException as exc:
            raise AssertionError(f"{exc!r}\n--- fleet output ---\n{fleet.proc.output()[-4000:]}") from exc


def drill(fleet: Fleet, master: psutil.Process) -> None:
    if True:
        assert get(fleet.port, "/")[0] == 200
        before = status_now(fleet.port)
        storm(fleet.port, master, lambda: bool(fleet.status()["workers"]))
        closed = time.monotonic()

        # Requests the proxy sheds get a quick 503; it serves again once the dead clients'
        # slow answers are done (3 s): the first success comes within seconds of the close.
        wait_until(lambda: get(fleet.port, "/", timeout=10.0)[0] == 200, timeout=10.0,
                   message="the proxy serves again")
        recovered = time.monotonic() - closed

        def one(_: int) -> tuple[int, bytes]:
            return get(fleet.port, "/", timeout=10.0)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(100)))
        failed = [answer for answer in answers if answer[0] != 200]
        assert not failed, (len(failed), failed[:3])
        elapsed = time.monotonic() - closed
        assert elapsed < 10.0, elapsed
        print(f"recovered in {recovered:.2f} s, 100 requests done {elapsed:.2f} s after the close")
        # The status page's sampler lived through it: status.json moves on.
        wait_until(lambda: status_now(fleet.port) > before + 2, timeout=10.0, message="status.json updates")
        assert fleet.proc.proc.poll() is None
