"""``fleet upgrade`` under load, on real processes and sockets: a new release installed into the
fleet's environment (a copy of fleet's source on PYTHONPATH, changed in place as ``pip install
-U`` would) takes over with no failed or refused request, no WebSocket closed, the same worker
pids and counters that go on; a release that cannot import is refused and the old fleet serves
on."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

import fleet
from liveload import Echo, LiveLoad
from support import FRESH_METRICS, http_get, wait_until
from up_helpers import Fleet, up

BACKEND = Path(__file__).resolve().parent / "apps" / "backend.py"
SOURCE = Path(fleet.__file__).resolve().parent


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A fleet installed for this test only: the directory to put on PYTHONPATH."""
    site = tmp_path / "site"
    shutil.copytree(SOURCE, site / "fleet", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def release(site: Path, version: str) -> None:
    init = site / "fleet" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text()))


def counters(port: int) -> dict[str, float]:
    _, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    totals: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = re.match(r"(fleet_requests_total|fleet_bytes_sent_total|fleet_upgrades_total)(\{[^}]*\})? (\S+)", line)
        if match:
            name = match.group(1)
            key = name + (match.group(2) or "") if name == "fleet_upgrades_total" else name
            totals[key] = totals.get(key, 0.0) + float(match.group(3))
    return totals


def workers(status: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((w["id"], w["pid"], w["port"], w["generation"], w["started_at"], w["restarts"])
                  for w in status["workers"])


def start(tmp_path: Path, site: Path) -> Fleet:
    shutil.copy(BACKEND, tmp_path / "backend.py")
    started = up(tmp_path, "backend.py", workers=2, proxy=True, env={"PYTHONPATH": str(site), **FRESH_METRICS})
    started.proc.wait_for_output(r"ready: open", timeout=60)
    return started


def test_an_upgrade_under_load_keeps_workers_websockets_and_counters(tmp_path: Path, installed: Path) -> None:
    running = start(tmp_path, installed)
    with running.proc:
        with LiveLoad(running.port, websockets=30, exchange=Echo("/ws")) as load:
            wait_until(lambda: counters(running.port).get("fleet_requests_total", 0) > 200, timeout=30)
            before, counted = running.status(), counters(running.port)
            release(installed, "99.0.0")
            done = running.cli("upgrade")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "upgraded from" in done.stdout
            after = running.status()
            wait_until(lambda: counters(running.port).get("fleet_requests_total", 0) > counted["fleet_requests_total"],
                       timeout=20)
            result = load.stop()
        assert result.failures() == [], result.summary() + "\n" + running.proc.output()[-3000:]
        assert result.websockets == 30
        assert after["version"] == "99.0.0" and before["version"] == fleet.__version__
        assert after["pid"] == before["pid"]
        assert workers(after) == workers(before)
        assert after["started_at"] > before["started_at"]
        assert after["fleet_started_at"] == before["fleet_started_at"]
        assert after["upgrade"]["last"]["result"] == "done"
        now = counters(running.port)
        assert now["fleet_requests_total"] >= counted["fleet_requests_total"]
        assert now["fleet_bytes_sent_total"] >= counted["fleet_bytes_sent_total"]
        assert now['fleet_upgrades_total{result="done"}'] == 1
        assert "upgrade: 2 workers, 30 WebSockets" in running.proc.output()


def test_a_release_that_cannot_import_is_refused_and_the_old_fleet_serves_on(tmp_path: Path, installed: Path) -> None:
    running = start(tmp_path, installed)
    with running.proc:
        with LiveLoad(running.port, websockets=30, exchange=Echo("/ws")) as load:
            before = running.status()
            broken = installed / "fleet" / "upgrade" / "adopt.py"
            broken.write_text(broken.read_text() + "\nraise ImportError('this release is broken')\n")
            release(installed, "99.0.1")
            refused = running.cli("upgrade")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "Traceback" in refused.stderr and "this release is broken" in refused.stderr
            after = running.status()
            result = load.stop()
        assert result.failures() == [], result.summary()
        assert after["version"] == before["version"] == fleet.__version__
        assert workers(after) == workers(before)
        assert after["upgrade"]["last"]["result"] == "refused"
        assert counters(running.port)['fleet_upgrades_total{result="refused"}'] == 1


def test_sigusr2_after_a_reload_keeps_the_draining_generation_and_its_websockets(tmp_path: Path,
                                                                                 installed: Path) -> None:
    import os
    import signal

    import websocket

    running = start(tmp_path, installed)
    with running.proc:
        url, origin = f"ws://127.0.0.1:{running.port}/ws", f"http://127.0.0.1:{running.port}"
        sockets = [websocket.create_connection(url, origin=origin, timeout=10) for _ in range(4)]
        try:
            for n, sock in enumerate(sockets):
                sock.send(f"before {n}")
                assert sock.recv().endswith(f"before {n}")
            reloaded = running.cli("reload")
            assert reloaded.returncode == 0, reloaded.stderr
            before = running.status()
            draining = {w["id"]: w["pid"] for w in before["workers"] if w["state"] == "draining"}
            assert len(draining) == 2
            release(installed, "99.0.2")
            os.kill(before["pid"], signal.SIGUSR2)
            wait_until(lambda: running.status()["version"] == "99.0.2", timeout=60)
            after = running.status()
            assert {w["id"]: w["pid"] for w in after["workers"] if w["state"] == "draining"} == draining
            assert workers(after) == workers(before)
            assert after["last_reload"] == before["last_reload"] and after["last_reload"]["ok"]
            for n, sock in enumerate(sockets):  # each tunnel still reaches its old worker
                sock.send(f"after {n}")
                answer = sock.recv()
                assert answer.endswith(f"after {n}") and answer.split(":")[0] in draining, answer
        finally:
            for sock in sockets:
                sock.close()
        # Their WebSockets closed: the adopted drains end and the old generation stops.
        wait_until(lambda: all(w["state"] == "ready" for w in running.status()["workers"])
                   and len(running.status()["workers"]) == 2, timeout=30)


def test_a_new_master_that_fails_after_the_exec_leaves_no_process_behind(tmp_path: Path, installed: Path) -> None:
    import psutil

    running = start(tmp_path, installed)
    with running.proc:
        before = running.status()
        pids = [before["pid"], *(w["pid"] for w in before["workers"])]
        adopt = installed / "fleet" / "upgrade" / "adopt.py"
        marker = "    supervisor = master.supervisor\n    assert supervisor is not None\n"
        assert marker in adopt.read_text()
        # Imports and checks fine (the preflight passes), fails only once it has taken over.
        adopt.write_text(adopt.read_text().replace(
            marker, marker + "    raise RuntimeError('this release fails after the exec')\n", 1))
        failed = running.cli("upgrade")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "the fleet is gone" in failed.stdout
        assert running.proc.wait(timeout=30) != 0
        assert "this release fails after the exec" in running.proc.output()
        wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                   for pid in pids), timeout=20)


def test_unapplied_configuration_refuses_the_upgrade_then_an_idle_keep_alive_client_is_handed_over(
        tmp_path: Path, installed: Path) -> None:
    running = start(tmp_path, installed)
    with running.proc:
        before = running.status()
        (tmp_path / "fleet.toml").write_text("max_connections = 500\n")  # not reloaded yet
        release(installed, "99.0.3")
        refused = running.cli("upgrade")
        assert refused.returncode == 1
        assert "--max-connections: 10000 -> 500" in refused.stderr and "fleet reload` first" in refused.stderr
        assert running.status()["version"] == before["version"]
        assert running.cli("reload").returncode == 0
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as idle:
            assert one_answer(idle, running.port).startswith(b"HTTP/1.1 200")
            done = running.cli("upgrade")
            assert done.returncode == 0, done.stdout + done.stderr
            assert running.status()["version"] == "99.0.3"
            # The idle keep-alive connection was handed over: the same socket is answered again.
            assert one_answer(idle, running.port).startswith(b"HTTP/1.1 200")
        assert "1 idle connections adopted" in running.proc.output()


def one_answer(sock: socket.socket, port: int) -> bytes:
    """One keep-alive GET on ``sock`` and its whole answer (backend.py's / has a Content-Length)."""
    sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head
