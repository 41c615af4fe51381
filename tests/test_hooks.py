"""--on-ready, --on-exit, --on-crash-loop and --hook-timeout: event detection (pure) and real
hooks run by a real fleet."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from fleet.hooks import MAX_RUNNING, HookEvent, HookRunner, detect, exit_fields
from fleet.supervisor.process import Output
from fleet.supervisor.info import WorkerChange, WorkerInfo
from support import FleetProcess, free_port_range, wait_until
from up_helpers import processes_mentioning

HTTP_SERVER = f"exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"
RECORD = ('echo "$FLEET_HOOK_EVENT $FLEET_WORKER_ID pid=$FLEET_WORKER_PID port=$FLEET_WORKER_PORT '
          'code=$FLEET_EXIT_CODE sig=$FLEET_EXIT_SIGNAL" >> {log}; echo said-$FLEET_HOOK_EVENT')


def _info(state: str, *, pid: int | None = 10, last_exit: int | None = None, looping: bool = False) -> WorkerInfo:
    return WorkerInfo(index=0, id="w0", port=5100, pid=pid, state=state, started_at=None, restarts=0,
                      crash_looping=looping, last_exit=last_exit)


def test_detect_ready_exit_and_crash_loop_once_each() -> None:
    C = WorkerChange
    starting, ready = _info("starting"), _info("ready")
    assert detect(C(starting, ready)) == [HookEvent("ready", "w0", 10, 5100)]
    assert detect(C(ready, _info("ready"))) == []
    assert detect(C(None, ready)) == [HookEvent("ready", "w0", 10, 5100)]
    exited = _info("exited", pid=None, last_exit=-9)
    assert detect(C(ready, exited)) == [HookEvent("exit", "w0", 10, 5100, None, "SIGKILL")]
    looping = _info("backoff", pid=None, last_exit=3, looping=True)
    assert detect(C(_info("exited", pid=None, last_exit=3), looping)) == [
        HookEvent("crash-loop", "w0", None, 5100, 3, None)]
    assert detect(C(looping, _info("starting", looping=True))) == []
    assert detect(C(None, _info("starting"))) == []


def test_exit_fields_and_environment() -> None:
    assert exit_fields(0) == (0, None) and exit_fields(-15) == (None, "SIGTERM")
    assert exit_fields(None) == (None, None) and exit_fields(-200) == (None, "SIG200")
    assert HookEvent("exit", "w1", 42, 5101, 2, None).environment() == {
        "FLEET_HOOK_EVENT": "exit", "FLEET_WORKER_ID": "w1", "FLEET_WORKER_PID": "42",
        "FLEET_WORKER_PORT": "5101", "FLEET_EXIT_CODE": "2", "FLEET_EXIT_SIGNAL": ""}


def _start(tmp_path: Path, cmd: str, *args: str) -> tuple[FleetProcess, int]:
    base = free_port_range(1)
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    proc = FleetProcess(["up", "--cmd", cmd, "-n", "1", "--base-port", str(base), "--no-proxy",
                         "--port", str(base + 1), *args],
                        env={"XDG_RUNTIME_DIR": str(run), "FLEET_SECRET_TEST": "hidden"}, cwd=str(tmp_path))
    return proc, base


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_ready_and_exit_hooks_get_the_worker_in_their_environment(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    proc, base = _start(tmp_path, HTTP_SERVER, "--on-ready", RECORD.format(log=log),
                        "--on-exit", RECORD.format(log=log) + "; env > " + str(tmp_path / "exit.env"))
    with proc:
        match = proc.wait_for_output(r"g1w0:\d+ ready \(pid (\d+)", timeout=60)
        first_pid = int(match.group(1))
        wait_until(lambda: _lines(log), timeout=20, message="the ready hook's line")
        assert _lines(log) == [f"ready g1w0 pid={first_pid} port={base} code= sig="]
        proc.wait_for_output(r"hook:ready g1w0 \| said-ready", timeout=10)
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: len(_lines(log)) >= 3, timeout=30, message="exit and second ready hooks")
        lines = _lines(log)
        assert f"exit g1w0 pid={first_pid} port={base} code= sig=SIGKILL" in lines
        assert any(line.startswith("ready g1w0 pid=") and str(first_pid) not in line for line in lines)
        environment = (tmp_path / "exit.env").read_text()
        assert "FLEET_SECRET_TEST" not in environment  # fleet's settings stay out, like a worker's
        assert "FLEET_HOOK_EVENT=exit" in environment


def test_crash_loop_hook_fires_once_with_the_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    stop = tmp_path / "broken"
    cmd = f"test -e {stop} && exit 3; {HTTP_SERVER}"
    proc, base = _start(tmp_path, cmd, "--on-crash-loop", RECORD.format(log=log))
    with proc:
        match = proc.wait_for_output(r"g1w0:\d+ ready \(pid (\d+)", timeout=60)
        stop.touch()
        os.kill(int(match.group(1)), signal.SIGKILL)
        proc.wait_for_output(r"g1w0:\d+ crash-looping:", timeout=30)
        wait_until(lambda: _lines(log), timeout=20, message="the crash-loop hook's line")
        proc.wait_for_output(r"restarting in [1-9]", timeout=30)  # a few more exits meanwhile
        assert _lines(log) == [f"crash-loop g1w0 pid= port={base} code=3 sig="]


def _hooks(proc: FleetProcess, marker: Path) -> list[int]:
    """Pids of the hook's shell (fleet's own command line names the marker too)."""
    return [p.pid for p in processes_mentioning(str(marker)) if p.pid != proc.pid]


def test_a_slow_hook_is_killed_after_the_timeout_and_blocks_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "never"
    proc, _ = _start(tmp_path, HTTP_SERVER, "--on-ready", f"echo started; sleep 3600; touch {marker}",
                     "--hook-timeout", "1.5")
    with proc:
        proc.wait_for_output(r"control socket", timeout=60)  # fleet got ready meanwhile
        proc.wait_for_output(r"hook:ready g1w0 \| started", timeout=10)
        assert _hooks(proc, marker)
        proc.wait_for_output(r"hook:ready g1w0 killed after --hook-timeout 1.5 s", timeout=10)
        wait_until(lambda: not _hooks(proc, marker), timeout=5, message="the hook gone")
        assert not marker.exists()


def test_hooks_still_running_at_stop_are_killed(tmp_path: Path) -> None:
    marker = tmp_path / "never"
    proc, _ = _start(tmp_path, HTTP_SERVER, "--on-ready", f"echo started; sleep 3600; touch {marker}")
    with proc:
        proc.wait_for_output(r"hook:ready g1w0 \| started", timeout=60)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not _hooks(proc, marker)


class _Lines(Output):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def write_line(self, text: str) -> None:
        self.lines.append(text)


def test_at_most_max_running_hooks_at_once_and_close_kills_them(tmp_path: Path) -> None:
    marker = tmp_path / "never"

    async def scenario() -> tuple[list[str], list[int]]:
        output = _Lines()
        runner = HookRunner({"ready": f"sleep 3600; touch {marker}"}, 60.0, output, lambda: False)
        for index in range(MAX_RUNNING + 2):
            info = WorkerInfo(index=index, id=f"w{index}", port=5100 + index, pid=100 + index,
                              state="ready", started_at=None, restarts=0, crash_looping=False, last_exit=None)
            runner.observe(WorkerChange(None, info))
        await asyncio.sleep(0)

        def hooks() -> list[int]:
            # The hooks' shells are this process's children; a shell's own fork (for ``sleep``,
            # before its exec) also names the marker for a moment, and is not a hook.
            return [p.pid for p in processes_mentioning(str(marker)) if p.ppid() == os.getpid()]

        deadline = time.monotonic() + 10
        while len(hooks()) < MAX_RUNNING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        running = hooks()
        await runner.close(grace=0.1)
        return output.lines, running

    lines, running = asyncio.run(scenario())
    assert len(running) == MAX_RUNNING
    assert [line for line in lines if "skipped" in line] == [
        f"fleet | hook ready of w{i} skipped: {MAX_RUNNING} hooks are still running"
        for i in (MAX_RUNNING, MAX_RUNNING + 1)]
    assert not processes_mentioning(str(marker))
