"""Finding a running fleet from anywhere: the private runtime directory, --name, fleet ls, and
selector-less status/down. Each test has its own XDG_RUNTIME_DIR, so tests never see each
other's fleets (nor a developer's)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.control import ControlError
from fleet.discovery import (
    STALE_AFTER,
    FleetEntry,
    check_private,
    choose,
    default_name,
    ensure_runtime_dir,
    runtime_dir,
    scan,
    valid_name,
)
from fleet.fleetlist import format_fleets
from support import FleetProcess, free_port, free_port_range, kill_group

HTTP_SERVER = f"{sys.executable} -m http.server --bind 127.0.0.1 {{port}}"


# -- pure parts ------------------------------------------------------------------------------
def test_names_are_plain_file_names() -> None:
    assert valid_name("shop-1.prod_a") == "shop-1.prod_a"
    for bad in ("", "../x", "a/b", ".hidden", "-x", "x.sock", "a b", "x" * 65):
        with pytest.raises(ValueError, match="not a fleet name"):
            valid_name(bad)


def test_default_name_is_the_port_and_port_0_fleets_do_not_collide() -> None:
    assert default_name(5006, 42) == "5006"
    assert default_name(0, 42) == "port0-42" != default_name(0, 43)


def test_runtime_dir_prefers_xdg_and_never_the_working_directory(tmp_path: Path) -> None:
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}, uid=7) == str(tmp_path / "fleet")
    assert runtime_dir({}, uid=7) == "/tmp/fleet-7"
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}, uid=7) == "/tmp/fleet-7"
    assert runtime_dir({"XDG_RUNTIME_DIR": "relative"}, uid=7) == "/tmp/fleet-7"


def test_runtime_dir_is_created_private(tmp_path: Path) -> None:
    path = ensure_runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert path == str(tmp_path / "fleet")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert ensure_runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == path  # exists: fine


def test_a_runtime_dir_open_to_others_a_symlink_or_someone_elses_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    os.chmod(shared, 0o777)
    with pytest.raises(ControlError, match=r"open to other users \(mode 0777, needs 0700\)"):
        check_private(str(shared))
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ControlError, match="is not a directory"):
        check_private(str(link))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    check_private(str(private))
    with pytest.raises(ControlError, match=f"belongs to uid {os.getuid()}, not to you"):
        check_private(str(private), uid=os.getuid() + 1)


def _entry(name: str, port: int | None, pid: int = 1) -> FleetEntry:
    return FleetEntry(socket=f"/d/{name}.sock", name=name, pid=pid, app="app.py", port=port,
                      workers=2, ready=2, started_at=0.0)


def test_choose_the_only_fleet_or_by_name_or_port() -> None:
    one, two = _entry("shop", 8000, 10), _entry("5006", None, 11)
    assert choose((one,), "/d") == one
    assert choose((one, two), "/d", name="shop") == one
    assert choose((one, two), "/d", port=8000) == one
    assert choose((one, two), "/d", port=5006) == two  # a --no-proxy fleet by its default name
    with pytest.raises(ControlError, match=r"several fleets: shop \(port 8000, pid 10, app.py\), "
                                           r"5006 \(no proxy, pid 11, app.py\); choose one with "
                                           r"--name NAME or --port PORT"):
        choose((one, two), "/d")
    with pytest.raises(ControlError, match=r"no fleet named 'x' running \(looked in /d\); running: shop"):
        choose((one, two), "/d", name="x")
    with pytest.raises(ControlError, match=r"^no fleet running \(looked in /d\)$"):
        choose((), "/d")


def test_ls_table() -> None:
    entry = FleetEntry(socket="/d/shop.sock", name="shop", pid=77, app="app.py", port=8000,
                       workers=3, ready=2, started_at=1000.0)
    lines = format_fleets([entry], now=1000.0 + 125).splitlines()
    assert lines[0].split() == ["NAME", "PID", "PORT", "WORKERS", "UPTIME", "APP"]
    assert lines[1].split() == ["shop", "77", "8000", "2/3", "2m05s", "app.py"]


def test_scan_removes_old_stale_sockets_and_leaves_young_ones(tmp_path: Path) -> None:
    old, young = tmp_path / "old.sock", tmp_path / "young.sock"
    for path in (old, young):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))  # bound, never listening: what a killed fleet leaves behind
    past = time.time() - STALE_AFTER - 5
    os.utime(old, (past, past))
    (tmp_path / "notes.sock").write_text("not a socket")
    found = scan(str(tmp_path))
    assert found.fleets == () and found.removed == (str(old),) and found.unreachable == (str(young),)
    assert not old.exists() and young.exists() and (tmp_path / "notes.sock").exists()


# -- end to end --------------------------------------------------------------------------------
def _runtime(tmp_path: Path) -> dict[str, str]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": str(run)}


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full.pop("XDG_RUNTIME_DIR", None)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=full, cwd=str(cwd))


def _start(tmp_path: Path, env: dict[str, str], *args: str, cwd: Path) -> FleetProcess:
    base = free_port_range(1)
    return FleetProcess(["up", "--cmd", HTTP_SERVER, "-n", "1", "--base-port", str(base), *args],
                        env=env, cwd=str(cwd))


def _ready(proc: FleetProcess) -> str:
    """Wait until the fleet serves its control socket; return that socket's path."""
    return proc.wait_for_output(r"control socket (\S+):", timeout=60).group(1)


def test_down_from_another_directory_without_a_selector(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    here, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    port = free_port()
    with _start(tmp_path, env, "--port", str(port), cwd=here) as proc:
        path = _ready(proc)
        assert path == str(tmp_path / "run" / "fleet" / f"{port}.sock")
        assert stat.S_IMODE(os.stat(tmp_path / "run" / "fleet").st_mode) == 0o700
        assert list(here.iterdir()) == []  # nothing left in the working directory
        status = _cli(env, "status", "--json", cwd=elsewhere)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pid"] == proc.pid
        result = _cli(env, "down", cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        assert f"stopping fleet (pid {proc.pid})" in result.stdout
        assert proc.wait(30) == 0
    assert not os.path.exists(path)
    gone = _cli(env, "status", cwd=elsewhere)
    assert gone.returncode == 1
    assert f"no fleet running (looked in {tmp_path / 'run' / 'fleet'})" in gone.stderr


def test_two_fleets_need_a_selector_and_ls_lists_both(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    port = free_port()
    with _start(tmp_path, env, "--port", str(port), cwd=tmp_path) as first, \
            _start(tmp_path, env, "--port", "0", "--name", "shop", cwd=tmp_path) as second:
        _ready(first)
        _ready(second)
        several = _cli(env, "status", cwd=tmp_path)
        assert several.returncode == 1
        assert "several fleets: " in several.stderr and "choose one with --name NAME or --port PORT" in several.stderr
        assert f"{port} (port {port}, pid {first.pid}" in several.stderr
        assert f"shop (port " in several.stderr and f"pid {second.pid}" in several.stderr
        by_name = _cli(env, "status", "--json", "--name", "shop", cwd=tmp_path)
        assert json.loads(by_name.stdout)["pid"] == second.pid
        by_port = _cli(env, "status", "--json", "--port", str(port), cwd=tmp_path)
        assert json.loads(by_port.stdout)["pid"] == first.pid
        by_env = _cli({**env, "FLEET_PORT": str(port)}, "status", "--json", cwd=tmp_path)
        assert json.loads(by_env.stdout)["pid"] == first.pid
        toml_dir = tmp_path / "project"
        toml_dir.mkdir()
        (toml_dir / "fleet.toml").write_text(f"port = {port}\n")
        by_toml = _cli(env, "status", "--json", cwd=toml_dir)
        assert json.loads(by_toml.stdout)["pid"] == first.pid

        listing = _cli(env, "ls", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
        assert listing.stdout.splitlines()[0].split() == ["NAME", "PID", "PORT", "WORKERS", "UPTIME", "APP"]
        assert rows[str(port)][1:4] == [str(first.pid), str(port), "1/1"]
        assert rows["shop"][1] == str(second.pid) and rows["shop"][2] not in {"0", "-"}
        assert rows["shop"][5:7] == ["--cmd", sys.executable]
        as_json = json.loads(_cli(env, "ls", "--json", cwd=tmp_path).stdout)
        assert sorted(f["name"] for f in as_json["fleets"]) == sorted([str(port), "shop"])

        assert _cli(env, "down", "--name", "shop", cwd=tmp_path).returncode == 0
        assert second.wait(30) == 0
        only = _cli(env, "down", cwd=tmp_path)  # one left: no selector needed any more
        assert only.returncode == 0, only.stderr
        assert first.wait(30) == 0
    assert "no fleet running" in _cli(env, "ls", cwd=tmp_path).stdout


def test_two_port_0_fleets_get_their_own_sockets(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    with _start(tmp_path, env, "--port", "0", cwd=tmp_path) as first, \
            _start(tmp_path, env, "--port", "0", cwd=tmp_path) as second:
        paths = {_ready(first), _ready(second)}
        assert paths == {str(tmp_path / "run" / "fleet" / f"port0-{p.pid}.sock") for p in (first, second)}


def test_a_second_fleet_with_the_same_name_is_refused(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    with _start(tmp_path, env, "--port", "0", "--name", "shop", cwd=tmp_path) as first:
        path = _ready(first)
        with _start(tmp_path, env, "--port", "0", "--name", "shop", cwd=tmp_path) as second:
            assert second.wait(30) == 1
            assert f"another fleet is already running with control socket {path}" in second.output()


def test_fleet_ls_removes_the_socket_of_a_killed_fleet(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    with _start(tmp_path, env, "--port", "0", "--name", "doomed", cwd=tmp_path) as proc:
        path = _ready(proc)
        kill_group(proc.pid)  # kill -9: no chance to remove its socket
        proc.wait(30)
    assert os.path.exists(path)
    past = time.time() - STALE_AFTER - 5
    os.utime(path, (past, past))
    listing = _cli(env, "ls", cwd=tmp_path)
    assert f"removed stale socket {path}" in listing.stderr
    assert "no fleet running" in listing.stdout and not os.path.exists(path)


def test_an_unsafe_runtime_directory_is_refused_with_the_reason(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    shared = tmp_path / "run" / "fleet"
    shared.mkdir(mode=0o700)
    os.chmod(shared, 0o777)
    with _start(tmp_path, env, "--port", "0", cwd=tmp_path) as proc:
        assert proc.wait(30) == 1
        assert f"{shared} is open to other users (mode 0777, needs 0700)" in proc.output()
    status = _cli(env, "status", cwd=tmp_path)
    assert status.returncode == 1 and "is open to other users" in status.stderr


def test_control_socket_still_overrides_discovery(tmp_path: Path) -> None:
    env = _runtime(tmp_path)
    control = str(tmp_path / "explicit.sock")
    with _start(tmp_path, env, "--port", "0", "--control-socket", control, cwd=tmp_path) as proc:
        assert _ready(proc) == control
        result = _cli(env, "status", "--json", "--control-socket", control, cwd=tmp_path)
        assert json.loads(result.stdout)["pid"] == proc.pid
        assert "no fleet running" in _cli(env, "ls", cwd=tmp_path).stdout  # not in the directory
