"""fleet logs (the master's in-memory rings), --log-dir rotation, --log-json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet.config import ConfigError, build_config, parse_count
from fleet.logfiles import Rotation, RotatingFile
from fleet.logs import MAX_STORED_LINE, LogStore, json_line, split_line
from support import FleetProcess, free_port_range, http_get, wait_until

HTTP_SERVER = f"exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"
CHATTY = f"echo hello-$FLEET_WORKER_ID; {HTTP_SERVER}"


# -- pure parts ------------------------------------------------------------------------------
def test_split_line_files_worker_lines_under_their_id() -> None:
    assert split_line("w1:5101 | GET / 200") == ("w1", "w1:5101", "GET / 200")
    assert split_line("g3w0:5100 | x | y") == ("g3w0", "g3w0:5100", "x | y")
    assert split_line("fleet | ready") == ("fleet", "fleet", "ready")
    assert split_line("no separator") == ("fleet", "fleet", "no separator")


def test_store_keeps_the_last_lines_per_worker_and_merges_in_order() -> None:
    store = LogStore(lines_per_worker=3, max_workers=2)
    for i in range(5):
        store.add("w0", f"w0 {i}")
        store.add("w1", f"w1 {i}")
    entries, last = store.read(None, 10)
    assert [e["text"] for e in entries] == ["w0 2", "w1 2", "w0 3", "w1 3", "w0 4", "w1 4"]
    assert last == 10
    assert [e["text"] for e in store.read("w1", 2)[0]] == ["w1 3", "w1 4"]
    assert [e["text"] for e in store.read(None, 2)[0]] == ["w0 4", "w1 4"]
    assert store.read(None, 10, after=9)[0][0]["text"] == "w1 4"
    assert store.read(None, 0)[0] == []
    store.add("w2", "new worker")  # a third ring: the longest silent one goes
    assert store.workers() == ["w1", "w2"] and not store.known("w0")


def test_store_cuts_very_long_lines() -> None:
    store = LogStore()
    store.add("w0", "x" * (MAX_STORED_LINE * 3))
    assert len(store.read("w0", 1)[0][0]["text"]) == MAX_STORED_LINE + 1


def test_json_lines() -> None:
    worker = json.loads(json_line("w1:5101 | hello", 0.25))
    assert worker == {"time": "1970-01-01T00:00:00.250Z", "source": "worker", "message": "hello",
                      "worker": "w1", "label": "w1:5101"}
    error = json.loads(json_line("fleet | error: port taken", 0.0))
    assert error["source"] == "fleet" and error["level"] == "error" and "worker" not in error


def test_rotating_file_keeps_n_files_and_never_splits_a_line(tmp_path: Path) -> None:
    path = str(tmp_path / "w0.log")
    log = RotatingFile(path, Rotation(max_size=100, keep=2))
    for i in range(30):
        log.write(f"line {i:02d} ".encode() + b"." * 20 + b"\n")  # 30 bytes each: 3 per file
    log.write(b"y" * 500 + b"\n")  # longer than the limit: a file of its own
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["w0.log", "w0.log.1", "w0.log.2"]
    assert Path(path).read_bytes() == b"y" * 500 + b"\n"
    assert Path(path + ".1").read_text().splitlines()[-1].startswith("line 29")
    assert Path(path + ".2").read_text().splitlines()[0].startswith("line 24")
    assert all(os.path.getsize(path + f".{n}") <= 100 for n in (1, 2))


def test_rotating_file_with_keep_0_truncates_and_reopens_appending(tmp_path: Path) -> None:
    path = tmp_path / "w0.log"
    path.write_bytes(b"a" * 90)
    log = RotatingFile(str(path), Rotation(max_size=100, keep=0))
    log.write(b"b" * 20)
    log.close()
    assert path.read_bytes() == b"b" * 20 and os.listdir(tmp_path) == ["w0.log"]


def test_log_options_parse_and_name_themselves_in_errors() -> None:
    config = build_config({"log_max_size": "1MiB", "log_keep": "0", "log_json": True}, {}, {},
                          command="up", app="app.py")
    assert (config.log_max_size, config.log_keep, config.log_json) == (2**20, 0, True)
    assert build_config({}, {}, {}, command="up", app="app.py").log_keep == 5
    assert parse_count("3") == 3
    with pytest.raises(ConfigError, match="log.keep"):
        build_config({"log_keep": "-1"}, {}, {}, command="up", app="app.py")


# -- end to end --------------------------------------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": str(run)}


def _cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=full, cwd=str(cwd))


def _start(tmp_path: Path, env: dict[str, str], cmd: str, *args: str, workers: int = 1) -> tuple[FleetProcess, int]:
    base = free_port_range(workers)
    proc = FleetProcess(["up", "--cmd", cmd, "-n", str(workers), "--base-port", str(base), "--no-proxy",
                         "--port", str(base + workers), *args], env=env, cwd=str(tmp_path))
    return proc, base


def test_fleet_logs_from_another_directory_without_log_dir(tmp_path: Path) -> None:
    env = _env(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc, base = _start(tmp_path, env, CHATTY, workers=2)
    with proc:
        proc.wait_for_output(r"control socket", timeout=60)
        both = _cli(env, "logs", cwd=elsewhere)
        assert both.returncode == 0, both.stderr
        assert f"g1w0:{base} | hello-g1w0" in both.stdout.splitlines()
        assert f"g1w1:{base + 1} | hello-g1w1" in both.stdout.splitlines()
        assert any(line.startswith("fleet | ") for line in both.stdout.splitlines())
        one = _cli(env, "logs", "g1w1", "-n", "1", cwd=elsewhere)
        assert one.returncode == 0, one.stderr
        lines = one.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"g1w1:{base + 1} | ")
        nobody = _cli(env, "logs", "w7", cwd=elsewhere)
        assert nobody.returncode == 1 and "no worker 'w7' (known: fleet, g1w0, g1w1)" in nobody.stderr


def test_fleet_logs_follow_prints_new_lines_and_ends_with_the_fleet(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc, base = _start(tmp_path, env, HTTP_SERVER)
    with proc:
        proc.wait_for_output(r"control socket", timeout=60)
        full = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        full.update(env)
        follow = subprocess.Popen([sys.executable, "-m", "fleet", "logs", "g1w0", "-f", "-n", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(follow.stdout or []), daemon=True)
        reader.start()
        try:
            def requested() -> bool:
                http_get(f"http://127.0.0.1:{base}/followed-{os.getpid()}")  # http.server logs it
                return any(f"GET /followed-{os.getpid()}" in line for line in list(seen))

            wait_until(requested, timeout=20, interval=0.5, message="the request line in fleet logs -f")
            assert all(line.startswith(f"g1w0:{base} | ") for line in list(seen))
            assert _cli(env, "down", cwd=tmp_path).returncode == 0
            assert follow.wait(timeout=30) == 0
            assert "fleet logs: fleet stopped" in (follow.stderr.read() if follow.stderr else "")
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait(timeout=5)


def test_log_dir_files_rotate(tmp_path: Path) -> None:
    env = _env(tmp_path)
    logs = tmp_path / "logs"
    printer = (f"{sys.executable} -c \"import sys; [print('line %04d ' % i + '.' * 90) for i in range(1000)]; "
               f"sys.stdout.flush()\"; {HTTP_SERVER}")
    proc, base = _start(tmp_path, env, printer, "--log-dir", str(logs), "--log-max-size", "20KiB",
                        "--log-keep", "2")
    with proc:
        proc.wait_for_output(rf"g1w0:{base} \| line 0999", timeout=60)
        wait_until(lambda: (logs / "w0.log.2").exists(), timeout=10, message="two rotated files")
        assert sorted(os.listdir(logs)) == ["w0.log", "w0.log.1", "w0.log.2"]
        assert all(os.path.getsize(logs / name) <= 20 * 1024 for name in os.listdir(logs))
        current = (logs / "w0.log").read_text().splitlines()
        assert current[-1].startswith("line 0999")
        previous = (logs / "w0.log.1").read_text().splitlines()
        assert int(previous[-1].split()[1]) + 1 == int(current[0].split()[1])  # no line lost between


def test_log_json_makes_every_output_line_a_json_object(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc, base = _start(tmp_path, env, CHATTY, "--log-json")
    with proc:
        proc.wait_for_output(r"control socket", timeout=60)
        records = [json.loads(line) for line in proc.output().splitlines()]
        assert {"source": "worker", "worker": "g1w0", "label": f"g1w0:{base}", "message": "hello-g1w0"}.items() \
            <= next(r for r in records if r["source"] == "worker").items()
        assert any(r["source"] == "fleet" and r["message"].startswith("ready") for r in records)
        plain = _cli(env, "logs", "g1w0", cwd=tmp_path)  # fleet logs shows the plain lines
        assert f"g1w0:{base} | hello-g1w0" in plain.stdout.splitlines()
