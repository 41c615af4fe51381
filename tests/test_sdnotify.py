"""systemd Type=notify: what fleet sends to $NOTIFY_SOCKET, received on a socket the test binds
(this machine runs no systemd), and what workers do not inherit."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

from fleet.config import build_config
from fleet.configgen import render
from fleet.control import request
from fleet.sdnotify import message, socket_address, watchdog_interval
from fleet.supervisor.command import worker_environment
from support import FleetProcess, free_port_range

HTTP_SERVER = f"exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"


def test_socket_addresses_paths_and_abstract_names() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@fleet/x") == b"\0fleet/x"
    assert socket_address("relative") is None and socket_address("") is None and socket_address(None) is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 5) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "5"}, 5) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "6"}, 5) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 5) is None and watchdog_interval({}, 5) is None
    assert message("READY=1", status="a\nb") == b"READY=1\nSTATUS=a b\n"


def test_workers_do_not_inherit_the_notify_variables() -> None:
    env = worker_environment({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "HOME": "/h"},
                             {"PORT": "5100"})
    assert env == {"HOME": "/h", "PORT": "5100"}


def test_fleet_config_systemd_is_a_notify_unit_with_a_runtime_directory() -> None:
    unit = render("systemd", build_config({"name": "shop"}, {}, {}, command="config", app="app.py"))
    lines = unit.splitlines()
    for expected in ("Type=notify", "NotifyAccess=main", "RuntimeDirectory=fleet", "RuntimeDirectoryMode=0700",
                     "Environment=XDG_RUNTIME_DIR=/run", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert expected in lines, expected
    assert "--control-socket /run/fleet/shop.sock" in unit and "--name shop" in unit


class Receiver:
    """The systemd side: a datagram socket collecting what fleet sends."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        """The next message (after those already read) that carries ``key``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            if key in fields:
                return fields
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def _start(tmp_path: Path, notify: str, *extra_env: tuple[str, str]) -> FleetProcess:
    base = free_port_range(1)
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    env = {"XDG_RUNTIME_DIR": str(run), "NOTIFY_SOCKET": notify, **dict(extra_env)}
    cmd = f"env > {tmp_path}/worker-$FLEET_WORKER_ID.env; {HTTP_SERVER}"
    return FleetProcess(["up", "--cmd", cmd, "-n", "1", "--base-port", str(base), "--no-proxy",
                         "--port", str(base + 1)], env=env, cwd=str(tmp_path))


def test_ready_reloading_watchdog_and_stopping_reach_the_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    receiver = Receiver(path)
    try:
        with _start(tmp_path, path, ("WATCHDOG_USEC", "400000")) as proc:
            ready = receiver.wait_for("READY")
            assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid)
            # READY=1 only once fleet can be steered: its control socket answers at once.
            control = tmp_path / "run" / "fleet" / f"{proc.args[proc.args.index('--port') + 1]}.sock"
            assert request(str(control), "status")["workers"][0]["state"] == "ready"
            before = len(receiver.messages)
            receiver.wait_for("WATCHDOG", timeout=5)
            receiver.wait_for("WATCHDOG", timeout=5)
            assert len(receiver.messages) - before >= 2

            proc.signal(signal.SIGHUP)  # what ExecReload does
            reloading = receiver.wait_for("RELOADING")
            assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
            assert receiver.wait_for("READY")["STATUS"] == "reload done"
            assert request(str(control), "status")["workers"][0]["state"] == "ready"
            time.sleep(3)  # systemd reads late: WATCHDOG pings fill its queue (10 datagrams)

            proc.signal(signal.SIGTERM)
            assert receiver.wait_for("STOPPING")["STOPPING"] == "1"
            assert proc.wait(30) == 0
        worker_envs = sorted(tmp_path.glob("worker-*.env"))
        assert [path.name for path in worker_envs] == ["worker-g1w0.env", "worker-g2w0.env"]  # before and after the reload
        for path in worker_envs:
            assert "NOTIFY_SOCKET" not in path.read_text() and "WATCHDOG_USEC" not in path.read_text()
    finally:
        receiver.close()


def test_abstract_notify_socket(tmp_path: Path) -> None:
    name = f"fleet-test-{os.getpid()}-{secrets.token_hex(4)}"
    receiver = Receiver(b"\0" + name.encode())
    try:
        with _start(tmp_path, "@" + name) as proc:
            assert receiver.wait_for("READY")["MAINPID"] == str(proc.pid)
            assert "WATCHDOG" not in str(receiver.messages)  # no WATCHDOG_USEC: no pings
    finally:
        receiver.close()
