"""``--on-ready``, ``--on-exit``, ``--on-crash-loop``: shell commands run when a worker becomes
ready, when its process exits, and when it starts crash-looping (as circus's hooks and
gunicorn's ``post_worker_init``/``child_exit`` do).

``HookRunner.observe`` is one of the supervisor's observers: ``detect`` reads the hook events
off a ``WorkerChange`` (pure, unit tested) and each event starts its command without waiting
for it. A hook gets
``FLEET_HOOK_EVENT`` (ready, exit, crash-loop), ``FLEET_WORKER_ID``, ``FLEET_WORKER_PID``,
``FLEET_WORKER_PORT``, ``FLEET_EXIT_CODE`` and ``FLEET_EXIT_SIGNAL`` (empty when they do not
apply) on top of the workers' environment (fleet's settings and secrets removed). Its output is
prefixed ``hook:<event> <worker> | ...`` on fleet's output. It runs in its own process group,
killed after ``--hook-timeout``, and at most ``MAX_RUNNING`` run at once (more are skipped and
said so: a crash loop must not become a fork bomb). Exits during fleet's own stop run no hook.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fleet.supervisor.command import worker_environment
from fleet.supervisor.info import WorkerChange
from fleet.supervisor.policy import WorkerState
from fleet.supervisor.process import Output, relay_lines
from fleet.tasks import cancel_and_wait

if TYPE_CHECKING:
    from fleet.config.sections import HookSettings

MAX_RUNNING = 8
MAX_HOOK_LINE = 64 * 1024
EVENTS = ("ready", "exit", "crash-loop")


@dataclass(frozen=True)
class HookEvent:
    event: str  # one of EVENTS
    worker_id: str
    pid: int | None
    port: int
    exit_code: int | None = None
    exit_signal: str | None = None

    def environment(self) -> dict[str, str]:
        return {
            "FLEET_HOOK_EVENT": self.event,
            "FLEET_WORKER_ID": self.worker_id,
            "FLEET_WORKER_PID": "" if self.pid is None else str(self.pid),
            "FLEET_WORKER_PORT": str(self.port),
            "FLEET_EXIT_CODE": "" if self.exit_code is None else str(self.exit_code),
            "FLEET_EXIT_SIGNAL": self.exit_signal or "",
        }


def exit_fields(returncode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) of a returncode; negative means killed by that signal."""
    if returncode is None:
        return None, None
    if returncode >= 0:
        return returncode, None
    try:
        return None, signal.Signals(-returncode).name
    except ValueError:
        return None, f"SIG{-returncode}"


def detect(change: WorkerChange) -> list[HookEvent]:
    """The hook events of one worker change."""
    events: list[HookEvent] = []
    previous, info = change.before, change.after
    if change.entered(WorkerState.READY):
        events.append(HookEvent("ready", info.id, info.pid, info.port))
    if change.entered(WorkerState.EXITED):
        code, sig = exit_fields(info.last_exit)
        pid = previous.pid if previous is not None else None  # the process that exited
        events.append(HookEvent("exit", info.id, pid, info.port, code, sig))
    if change.started_crash_looping:
        code, sig = exit_fields(info.last_exit)
        events.append(HookEvent("crash-loop", info.id, None, info.port, code, sig))
    return events


class HookRunner:
    """Starts hook commands for worker events; never blocks the supervisor's announcement."""

    def __init__(self, commands: dict[str, str | None], timeout: float, output: Output,
                 stopping: Callable[[], bool]) -> None:
        self.commands = {event: cmd for event, cmd in commands.items() if cmd}
        self.timeout = timeout
        self.output = output
        self._stopping = stopping
        self._tasks: set[asyncio.Task[None]] = set()
        self._groups: set[int] = set()

    @classmethod
    def from_config(cls, hooks: "HookSettings", output: Output, stopping: Callable[[], bool]) -> "HookRunner":
        """The runner of the Hooks section (``config.hooks``)."""
        commands = {"ready": hooks.on_ready, "exit": hooks.on_exit, "crash-loop": hooks.on_crash_loop}
        return cls({event: cmd for event, cmd in commands.items() if cmd}, hooks.hook_timeout,
                   output, stopping)

    def observe(self, change: WorkerChange) -> None:
        """The supervisor's observer; registered after the front end's, so the proxy learns
        of a ready worker before its hook runs."""
        if not self.commands or self._stopping():
            return
        for event in detect(change):
            command = self.commands.get(event.event)
            if command is None:
                continue
            if len(self._tasks) >= MAX_RUNNING:
                self.output.fleet(f"hook {event.event} of {event.worker_id} skipped: "
                                  f"{MAX_RUNNING} hooks are still running")
                continue
            task = asyncio.ensure_future(self._run(command, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, command: str, event: HookEvent) -> None:
        label = f"hook:{event.event} {event.worker_id}"
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_shell(
                command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                env=worker_environment(os.environ, event.environment()))
        except OSError as exc:
            self.output.fleet(f"{label} cannot start: {exc.strerror or exc}")
            return
        self._groups.add(proc.pid)
        assert proc.stdout is not None
        relay = asyncio.ensure_future(self._relay(label, proc.stdout))
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait({exited}, timeout=self.timeout)
            self._kill(proc.pid)  # at the timeout; else what the hook left running in its group
            if not done:
                await exited
                self.output.fleet(f"{label} killed after --hook-timeout {self.timeout:g} s")
            elif proc.returncode:
                self.output.fleet(f"{label} exited with code {proc.returncode} "
                                  f"after {time.monotonic() - started:.1f} s")
            await asyncio.wait({relay}, timeout=2.0)
        finally:
            self._groups.discard(proc.pid)
            if proc.returncode is None:
                self._kill(proc.pid)
            await cancel_and_wait([relay, exited])

    async def _relay(self, label: str, stream: asyncio.StreamReader) -> None:
        def line(raw: bytes) -> None:
            self.output.write_line(f"{label} | {raw.decode('utf-8', 'replace').rstrip(chr(13))}")

        await relay_lines(stream, line, MAX_HOOK_LINE)

    @staticmethod
    def _kill(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def close(self, grace: float = 5.0) -> None:
        """Let running hooks finish for up to ``grace`` seconds, then kill them: none outlives fleet."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for pgid in list(self._groups):
            self._kill(pgid)
        if self._tasks:  # killed: each task reaps its hook and ends by itself
            await asyncio.wait(set(self._tasks), timeout=2.0)
        await cancel_and_wait(list(self._tasks))


__all__ = ["EVENTS", "HookEvent", "HookRunner", "MAX_RUNNING", "detect", "exit_fields"]
