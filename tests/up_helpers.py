"""Helpers for the ``fleet up`` end-to-end tests: start fleet on free ports, ask its status,
list every process it started (to prove none is left), run the CLI."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psutil

from fleet.control import request
from support import FleetProcess, free_port, free_port_range, start_fleet


class Fleet:
    """A started ``fleet up`` plus what the test needs to talk to it."""

    def __init__(self, proc: FleetProcess, base_port: int, port: int, control: str,
                 surge_port: int | None = None) -> None:
        self.proc = proc
        self.base_port = base_port
        self.surge_port = surge_port
        self.port = port
        self.control = control

    def status(self) -> dict[str, Any]:
        return request(self.control, "status")

    def worker(self, worker_id: str) -> dict[str, Any]:
        return next(w for w in self.status()["workers"] if w["id"] == worker_id)

    def all_ready(self, count: int) -> bool:
        workers = self.status()["workers"]
        return len(workers) == count and all(w["state"] == "ready" for w in workers)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--control-socket", self.control, timeout=timeout)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def up(tmp_path: Path, *args: str, workers: int = 1, proxy: bool = False, base: int | None = None,
       port: int | None = None, surge: int | None = None, env: dict[str, str] | None = None) -> Fleet:
    """``fleet up ARGS -n workers`` on free ports (unless given) with its control socket in tmp_path.
    Behind the proxy the second port block (``--surge-base-port``) is a free range too.
    ``env``: added to fleet's environment (``support.FRESH_METRICS``)."""
    base = base or free_port_range(workers)
    port = port or free_port()
    control = str(tmp_path / "fleet.sock")
    extra = ["--no-proxy"]
    if proxy:
        surge = surge or free_port_range(workers)
        extra = ["--surge-base-port", str(surge)]
    proc = start_fleet("up", *args, "-n", str(workers), "--base-port", str(base), "--port", str(port),
                       "--control-socket", control, *extra, env=env, cwd=str(tmp_path))
    return Fleet(proc, base, port, control, surge)


@contextlib.contextmanager
def workers_without_proxy(directory: Path, app: str, workers: int = 1) -> Iterator[Fleet]:
    """``fleet up APP --no-proxy`` with its workers ready, stopped on exit: the servers a module's
    tests put their own ``fleet balance``, nginx, HAProxy or Apache in front of."""
    started = up(directory, app, workers=workers)
    with started.proc:
        started.proc.wait_for_output(r"ready \(no proxy\)", timeout=60)
        yield started


def family(pid: int) -> list[psutil.Process]:
    """The process and every descendant, plus fleet's watchdog (its own session, same parent)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``text`` (a test's unique tmp path or port)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def balance(target: str, *options: str, env: dict[str, str] | None = None) -> tuple[FleetProcess, int]:
    """``fleet balance TARGET OPTIONS`` on a free port, once it says it serves; (process, port)."""
    port = free_port()
    proc = start_fleet("balance", target, "--port", str(port), *options, env=env)
    proc.wait_for_output(r"fleet \S+ balance \(pid", timeout=30)
    return proc, port
