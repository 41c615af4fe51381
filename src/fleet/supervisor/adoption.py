"""After ``fleet upgrade``: the new master takes over the workers the old one spawned.

Same pid, so they are still its children: ``waitpid`` works, ``PR_SET_PDEATHSIG`` still ties
them to this process (execv is not a death: the thread that forked them, the main thread, goes
on), and the watchdog keeps their groups through the pipe handed over (end of file there, if
this master dies, kills them as before). A worker is adopted as READY in the roster, with its
counters (spawns, planned restarts), start time and generation; its task then runs the usual
life from "supervise until exit" (``WorkerLives._run``): a later crash is restarted as always.

A worker that was draining (replaced by a reload or a recycle) is adopted into the replaced
workers and drained again, its ``--drain-timeout`` counted from the upgrade. What this does not
adopt: a worker starting, stopping or in backoff (the upgrade refuses to start then).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from fleet.supervisor.heartbeat import HeartbeatFile
from fleet.supervisor.policy import WorkerState, transition
from fleet.supervisor.process import LineRelay, WorkerProcess
from fleet.supervisor.watchdog import Watchdog
from fleet.supervisor.worker import Intent, Worker

if TYPE_CHECKING:
    from fleet.supervisor.manager import Supervisor
    from fleet.upgrade.state import UpgradeState, WatchdogRecord

POLL_EXIT = 5.0  # the pidfd wakes the wait; this only bounds a wake-up that never came


class AdoptedProcess(WorkerProcess):
    """A worker spawned by the master before the upgrade: its exit is read with a pidfd."""

    def __init__(self, pid: int, relay: LineRelay, output_fd: int) -> None:
        super().__init__(None, pid, relay, output_fd)
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def _reap(self) -> bool:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # this pid only (fleet.supervisor.reaper)
        except ChildProcessError:
            self._returncode = -signal.SIGKILL if self._returncode is None else self._returncode
            return True
        if pid == 0:
            return False
        self._returncode = os.waitstatus_to_exitcode(status)
        return True

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.pid)
        woken = asyncio.Event()
        loop.add_reader(pidfd, woken.set)
        try:
            while not self._reap():
                woken.clear()
                waiter = asyncio.ensure_future(woken.wait())
                try:
                    await asyncio.wait({waiter}, timeout=POLL_EXIT)
                finally:
                    waiter.cancel()  # one task per wait, never one per poll left behind
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        assert self._returncode is not None
        return self._returncode


class _WatchdogPipe:
    """What ``Watchdog`` uses of its ``Popen``, for the watchdog the old master started."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.stdin = os.fdopen(fd, "wb")

    def wait(self, timeout: float | None = None) -> int:
        """Blocking, as ``Popen.wait``: only called at the end of a stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid:
                return os.waitstatus_to_exitcode(status)
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("fleet.supervisor.watchdog", timeout or 0)
            time.sleep(0.02)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def adopt_watchdog(record: "WatchdogRecord") -> Watchdog:
    watchdog = Watchdog.__new__(Watchdog)
    watchdog.token = record.token
    watchdog._proc = _WatchdogPipe(record.pid, record.fd)  # type: ignore[assignment]
    watchdog.pid = record.pid
    watchdog._broken = False
    return watchdog


def adopt_workers(supervisor: "Supervisor", state: "UpgradeState") -> None:
    """Every worker of ``state`` in the roster as READY and current, its task supervising it."""
    lives: Any = supervisor  # the adopted records go where WorkerLives keeps its own
    watchdog = lives._watchdog = adopt_watchdog(state.watchdog) if state.watchdog is not None else Watchdog()
    lives._reaper = lives._start_reaper(watchdog)
    lives._numbers.last = state.generation
    supervisor.desired = state.desired
    supervisor.recycles.update(state.recycles)
    log_dir = supervisor.views.log_dir
    for record in state.workers:
        worker = Worker(index=record.index, generation=record.generation, block=record.block, port=record.port,
                        request_limit=record.request_limit)
        worker.spawns, worker.planned_restarts = record.spawns, record.planned_restarts
        worker.started_at, worker.started_mono = record.started_at, record.started_mono
        worker.ready_since, worker.ever_ready = record.ready_since, True
        log_path = os.path.join(log_dir, f"{worker.slot}.log") if log_dir else None
        relay = worker.relay = LineRelay(worker.label, supervisor.output, log_path)
        worker.proc = AdoptedProcess(record.pid, relay, record.output_fd)
        lives._reaper.own(record.pid, record.pid)  # a worker, not an orphan
        if record.heartbeat_fd is not None:
            beat = HeartbeatFile.__new__(HeartbeatFile)
            beat.fd = record.heartbeat_fd
            lives._liveness._files[worker.id] = beat
        worker.state = transition(WorkerState.STARTING, WorkerState.READY)
        worker.announced = lives._info(worker)  # it was ready before: no "ready" hook again
        lives._roster.add(worker)
        if record.draining:  # replaced before the upgrade: no new client, stopped once drained
            worker.state = transition(worker.state, WorkerState.DRAINING)
            lives._roster.retire(worker)
            worker.intend(Intent.STOP)
            lives._changed(worker)
        else:
            supervisor._serve(worker)
        worker.task = asyncio.ensure_future(lives._run(worker, False))


def drain_adopted(supervisor: "Supervisor") -> None:
    """Once the adopted WebSockets count on their workers again: the drains go on, each with
    its full ``--drain-timeout`` from now."""
    lives: Any = supervisor
    draining = list(lives._roster.replaced.values())
    if draining:
        lives._drains.begin(draining, supervisor.views.workers.drain_timeout)


__all__ = ["AdoptedProcess", "adopt_watchdog", "adopt_workers", "drain_adopted"]
