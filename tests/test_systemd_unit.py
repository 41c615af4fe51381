"""``fleet config systemd``'s unit run by a real systemd (a private user manager, see
``systemd_manager``): ``systemctl start`` returns once fleet said READY=1 with its workers
ready, ``RuntimeDirectory=fleet`` holds the control socket, ``systemctl reload`` is a rolling
restart, the watchdog is fed, and ``systemctl stop`` is a clean stop that removes the runtime
directory. The notify messages themselves are checked on a plain socket in test_sdnotify.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import EXAMPLES, ROOT, free_port, free_port_range, http_get, require_tool, wait_until
from systemd_manager import Unavailable, UserManager
from up_helpers import run_cli

UNIT = "fleet-test.service"


@pytest.fixture
def manager() -> Iterator[UserManager]:
    require_tool("systemctl")
    require_tool("unshare")
    started = UserManager()
    try:
        try:
            started.start()
        except Unavailable as exc:
            pytest.skip(f"no private systemd manager here: {exc}")
        yield started
    finally:
        started.close()


def user_unit(manager: UserManager, port: int, base: int, surge: int) -> str:
    """The unit ``fleet config systemd`` writes, with the two lines a user manager needs changed:
    its runtime directory root is $XDG_RUNTIME_DIR, not /run; and the watchdog switched on."""
    result = run_cli("config", "systemd", str(EXAMPLES / "tornado_hello.py"), "-n", "2", "--port", str(port),
                     "--base-port", str(base), "--surge-base-port", str(surge))
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert "Type=notify" in unit and "RuntimeDirectory=fleet" in unit and "Environment=XDG_RUNTIME_DIR=/run" in unit
    unit = unit.replace("Environment=XDG_RUNTIME_DIR=/run", f"Environment=XDG_RUNTIME_DIR={manager.runtime}")
    return re.sub(r"(?m)^#WatchdogSec=\d+$", "WatchdogSec=6", unit)


def fleet_status(manager: UserManager, port: int) -> dict[str, Any]:
    """``fleet status --json`` through the control socket in the unit's RuntimeDirectory (the
    status page's JSON is a sample up to 2 s old, too late to judge a moment)."""
    result = run_cli("status", "--json", "--control-socket", str(manager.runtime / "fleet" / f"{port}.sock"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_fleet_unit_starts_reloads_and_stops_under_a_real_systemd(manager: UserManager) -> None:
    port, base, surge = free_port(), free_port_range(2), free_port_range(2)
    (manager.units / UNIT).write_text(user_unit(manager, port, base, surge))
    manager.systemctl("daemon-reload")

    manager.systemctl("start", UNIT)  # Type=notify: returns once fleet sent READY=1
    shown = manager.show(UNIT, "ActiveState", "SubState", "StatusText", "MainPID", "WatchdogUSec")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), shown
    assert shown["StatusText"] == "2 workers ready" and shown["WatchdogUSec"] == "6s", shown
    status = fleet_status(manager, port)
    assert status["pid"] == int(shown["MainPID"])
    assert [w["state"] for w in status["workers"]] == ["ready", "ready"]  # READY=1 came after the workers
    socket = manager.runtime / "fleet" / f"{port}.sock"
    assert socket.is_socket() and (socket.parent.stat().st_mode & 0o777) == 0o700

    manager.systemctl("reload", UNIT)  # ExecReload: SIGHUP; fleet says RELOADING=1, then READY=1
    wait_until(lambda: manager.show(UNIT, "StatusText")["StatusText"] == "reload done", timeout=60,
               message="READY=1 after the reload")
    assert fleet_status(manager, port)["generation"] == 2
    assert manager.show(UNIT, "ActiveState")["ActiveState"] == "active"
    assert http_get(f"http://127.0.0.1:{port}/")[0] == 200

    wait_until(lambda: manager.show(UNIT, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != "0",
               timeout=10, message="a WATCHDOG=1 ping")
    manager.systemctl("stop", UNIT)  # SIGTERM to fleet: graceful stop
    shown = manager.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0", "NRestarts": "0"}, shown
    assert not (manager.runtime / "fleet").exists()  # RuntimeDirectory= is removed at stop
    assert ROOT.exists()
