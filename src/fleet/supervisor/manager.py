"""``Supervisor``: runs N workers on the event loop, restarts them, reloads, scales and stops them.

Each worker index has a slot and one task (``_run_slot``) that owns the slot's process from
spawn to exit and asks ``RestartPolicy`` what to do after an exit. Operations (reload, scale,
stop) never restart a process themselves: they set the slot's ``intent``, drain, and send
signals; the slot task sees the exit and acts on the intent. All state changes go through
``_set_state``, which checks the lifecycle table and fires ``on_change``.

The supervisor knows nothing about the proxy: it reports readiness through ``on_change`` and
asks ``load(worker_id)`` for in-flight requests while draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from fleet.appspec import AppSpec
from fleet.config import Config
from fleet.ports import PortInUseError, check_free
from fleet.supervisor.command import probe_host, worker_command, worker_host
from fleet.supervisor.heartbeat import Liveness
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.policy import (
    RUNNING_STATES,
    RestartPolicy,
    WorkerState,
    is_boot_error,
    transition,
)
from fleet.supervisor.probe import wait_ready
from fleet.supervisor.process import LineRelay, Output, WorkerProcess
from fleet.supervisor.reaper import Reaper
from fleet.supervisor.watchdog import Watchdog
from fleet.tasks import cancel_and_wait, wait_event

S = WorkerState

# How long a worker may take to exit after SIGTERM before it is killed, when the caller gives
# no longer graceful timeout; drained workers have nothing left to finish.
MIN_TERM_WAIT = 5.0
# When a held worker fails at start-up before w0 has settled, how long to wait for w0.
BOOT_SETTLE_SECONDS = 3.0
# How long a slot task may take to record the exit of a killed process before it is cancelled.
KILL_WAIT = 10.0


class SupervisorError(RuntimeError):
    """Workers could not be started (or an operation failed); ``str()`` is for the user."""


class Intent(enum.Enum):
    RUN = "run"  # restart after an exit (crash policy)
    RESTART = "restart"  # planned restart (reload, --max-memory): start again at once
    STOP = "stop"  # do not start again (shutdown, scale down)


@dataclass
class _Slot:
    index: int
    id: str
    port: int
    state: WorkerState = S.STARTING
    intent: Intent = Intent.RUN
    proc: WorkerProcess | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    spawns: int = 0
    started_at: float | None = None  # wall clock, for WorkerInfo
    started_mono: float = 0.0
    ever_ready: bool = False
    crash_looping: bool = False
    last_exit: int | None = None
    next_start_at: float | None = None
    failure: str | None = None  # why it went FAILED, or why its last start timed out
    timed_out: bool = False  # the current process was not ready within --start-timeout
    relay: LineRelay | None = None  # output of the current (or last) process
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.id}:{self.port}"


class Supervisor:
    """Spawns and watches the workers of one fleet. Use from one event loop."""

    def __init__(
        self,
        config: Config,
        spec: AppSpec | None,
        *,
        on_change: Callable[[WorkerInfo], None] | None = None,
        load: Callable[[str], int] | None = None,
        output: Output | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.desired = config.workers
        self._on_change = on_change or (lambda info: None)
        self._load = load
        self.output = output or Output()
        self._slots: dict[int, _Slot] = {}
        self._starting_up = False
        self._stopping = False
        self._watchdog: Watchdog | None = None
        # --- reaper/heartbeat hooks (issue 13: descendants die with fleet; hung workers) ---
        self._reaper: Reaper | None = None
        self._liveness = Liveness(config.worker_timeout, config.health_path, probe_host(config),
                                  self.output.fleet)
        # --- end hooks ---
        self._waiters: list[asyncio.Future[None]] = []
        self._ops = asyncio.Lock()  # one reload/scale/restart at a time

    # -- snapshots -------------------------------------------------------------------------
    def _info(self, slot: _Slot) -> WorkerInfo:
        running = slot.proc is not None and slot.state in RUNNING_STATES
        return WorkerInfo(
            index=slot.index, id=slot.id, port=slot.port,
            pid=slot.proc.pid if running and slot.proc else None,
            state=slot.state.value,
            started_at=slot.started_at if running else None,
            restarts=max(0, slot.spawns - 1),
            crash_looping=slot.crash_looping,
            last_exit=slot.last_exit,
            next_start_at=slot.next_start_at if slot.state is S.BACKOFF else None,
        )

    def workers(self) -> list[WorkerInfo]:
        """Snapshots of the current workers (not the ones stopped by a scale down)."""
        return [self._info(slot) for _, slot in sorted(self._slots.items())]

    def _set_state(self, slot: _Slot, new: WorkerState) -> None:
        slot.state = transition(slot.state, new)
        self._changed(slot)

    def _changed(self, slot: _Slot) -> None:
        info = self._info(slot)
        try:
            self._on_change(info)
        finally:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds after some state change; False at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while not predicate():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            # asyncio.wait, not wait_for: it never swallows a cancellation (fleet.tasks).
            await asyncio.wait({waiter}, timeout=remaining)
        return True

    # -- start -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker; return when all are ready.

        On failure raise SupervisorError and leave nothing running: a taken port (named with
        its owner), an app that cannot boot (its traceback was printed once), a worker that
        keeps dying or is not ready within --start-timeout.
        """
        host = worker_host(self.config)
        for index in range(self.desired):
            try:
                check_free(host, self.config.worker_port(index), what=f"worker {self.config.worker_id(index)} port")
            except PortInUseError as exc:
                raise SupervisorError(str(exc)) from None
        self._watchdog = Watchdog()
        self._reaper = self._start_reaper(self._watchdog)  # hook: subreaper + escaped groups
        self._starting_up = True
        try:
            for index in range(self.desired):
                # Only w0 talks at once while fleet starts: if the app is broken, every worker
                # prints the same traceback, and the user should read it once.
                self._add_slot(index, hold_output=index > 0)
            await self._wait_for(
                lambda: all(s.state in (S.READY, S.FAILED) for s in self._slots.values())
                or any(s.state is S.FAILED for s in self._slots.values()),
                None,
            )
            failed = [s for s in self._slots.values() if s.state is S.FAILED]
            if failed:
                w0 = self._slots.get(0)
                if w0 is not None and w0.state not in (S.READY, S.FAILED):
                    # w0's output is live: if it is failing the same way, its traceback is the
                    # one to show; give it a moment to settle before choosing whose to print.
                    await self._wait_for(lambda: w0.state in (S.READY, S.FAILED), BOOT_SETTLE_SECONDS)
                    failed = [s for s in self._slots.values() if s.state is S.FAILED]
                first = min(failed, key=lambda s: s.index)
                if first.relay is not None and not (w0 and w0.state is S.FAILED and first is not w0):
                    first.relay.release()
                for slot in self._slots.values():
                    if slot.relay is not None and slot is not first:
                        slot.relay.release(discard=True)
                raise SupervisorError(f"worker {first.id} failed to start: {first.failure}")
        except BaseException:
            # Failed or cancelled (a signal while starting): nothing may keep running.
            await self.kill_now()
            raise
        finally:
            self._starting_up = False

    def _add_slot(self, index: int, *, hold_output: bool = False) -> _Slot:
        slot = _Slot(index=index, id=self.config.worker_id(index), port=self.config.worker_port(index))
        self._slots[index] = slot
        slot.task = asyncio.ensure_future(self._run_slot(slot, hold_output))
        return slot

    # -- one slot's life -------------------------------------------------------------------
    async def _spawn(self, slot: _Slot, hold_output: bool) -> int | None:
        """Start a process for ``slot``; return an exit code if it could not even be started."""
        if slot.spawns > 0:  # the first start was checked by start()/scale() as a batch
            problem = await self._port_released(slot)
            if problem is not None:
                self.output.fleet(f"{slot.label} cannot start: {problem}")
                return None
        command = worker_command(self.config, self.spec, slot.index, self.desired)
        log_path = os.path.join(self.config.log_dir, f"{slot.id}.log") if self.config.log_dir else None
        if log_path:
            os.makedirs(self.config.log_dir or ".", exist_ok=True)
        relay = slot.relay = LineRelay(slot.label, self.output, log_path, hold=hold_output)
        slot.proc = None
        slot.timed_out = False
        slot.spawns += 1
        slot.started_at = time.time()
        slot.started_mono = time.monotonic()
        # hook: a heartbeat file for APP workers (--worker-timeout)
        extras = self._liveness.prepare(slot.id, beats=self.config.cmd is None)
        try:
            with self._reaper.spawning() if self._reaper else contextlib.nullcontext():  # hook
                family = self._watchdog.family_env() if self._watchdog else {}  # hook: FLEET_FAMILY
                slot.proc = await WorkerProcess.spawn(command.argv, {**command.env, **extras.env, **family},
                                                      relay, pass_fds=extras.pass_fds)
                if self._reaper is not None:
                    self._reaper.own(slot.proc.pid, slot.proc.pgid)  # hook: not an orphan
        except OSError as exc:
            relay.close()
            self._liveness.forget(slot.id)  # hook
            self.output.fleet(f"{slot.label} cannot execute {command.argv[0]}: {exc.strerror}")
            return 127
        if self._watchdog is not None:
            self._watchdog.add(slot.proc.pgid)
        return None

    async def _port_released(self, slot: _Slot, patience: float = 2.0) -> PortInUseError | None:
        """Wait briefly for the slot's port: the previous process group may still be dying."""
        deadline = time.monotonic() + patience
        while True:
            try:
                check_free(worker_host(self.config), slot.port, what=f"worker {slot.id} port")
                return None
            except PortInUseError as exc:
                if time.monotonic() >= deadline:
                    return exc
            await asyncio.sleep(0.05)

    async def _run_slot(self, slot: _Slot, hold_output: bool) -> None:
        first = True
        while True:
            if not first:
                self._set_state(slot, S.STARTING)
            spawn_failure = await self._spawn(slot, hold_output and first)
            first = False
            proc = slot.proc
            if proc is None:
                returncode: int | None = spawn_failure
            else:
                if slot.intent is Intent.STOP or self._stopping:
                    proc.signal_group(signal.SIGKILL)  # a stop came while it was being spawned
                self._changed(slot)  # the pid is known now
                returncode = await self._supervise(slot)
            slot.last_exit = returncode
            slot.proc = None
            self._set_state(slot, S.EXITED)
            if slot.intent is Intent.STOP or self._stopping:
                self._set_state(slot, S.STOPPED)
                return
            if slot.intent is Intent.RESTART:
                slot.intent = Intent.RUN
                continue
            decision = slot.policy.on_exit(slot.started_mono, time.monotonic(), returncode,
                                           ever_ready=slot.ever_ready, starting_up=self._starting_up)
            if slot.timed_out and self._starting_up:
                self._set_state(slot, S.FAILED)
                return
            if decision.give_up:
                slot.failure = decision.reason
                if is_boot_error(returncode):
                    slot.failure += "; see its output above"
                self._set_state(slot, S.FAILED)
                return
            if slot.relay is not None:
                slot.relay.release()  # held while fleet started: show why it died
            slot.crash_looping = decision.crash_looping
            looping = " crash-looping:" if decision.crash_looping else ""
            self.output.fleet(f"{slot.label}{looping} {decision.reason}; restarting in {decision.delay:.1f} s")
            slot.next_start_at = time.time() + decision.delay
            slot.wake.clear()
            self._set_state(slot, S.BACKOFF)
            await wait_event(slot.wake, decision.delay)  # woken early by an operation
            slot.next_start_at = None
            if slot.intent is Intent.STOP or self._stopping:
                self._set_state(slot, S.STOPPED)
                return
            slot.intent = Intent.RUN

    async def _supervise(self, slot: _Slot) -> int:
        """From spawn to exit of one process; returns its exit code."""
        proc = slot.proc
        assert proc is not None
        exited = asyncio.ensure_future(proc.wait())
        probe = asyncio.ensure_future(
            wait_ready(probe_host(self.config), slot.port, self.config.health_path, self.config.start_timeout)
        )
        try:
            await asyncio.wait({exited, probe}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await cancel_and_wait([probe, exited])
            raise
        # Every task started here ends here: a probe left running would hold up shutdown.
        await cancel_and_wait([probe])
        if not exited.done():
            if not probe.cancelled() and probe.result():
                if slot.state is S.STARTING:
                    slot.ever_ready = True
                    proc.relay.release()
                    self._set_state(slot, S.READY)
                    self.output.fleet(f"{slot.label} ready (pid {proc.pid}, "
                                      f"{time.monotonic() - slot.started_mono:.1f} s)")
                    # hook: from now on it must prove it is alive (--worker-timeout)
                    self._liveness.watch(slot.id, slot.label, slot.port, lambda: self._kill_hung(slot, proc))
                    await self._watch_stability(slot, exited)
            elif slot.state is S.STARTING:
                what = f"a 2xx from {self.config.health_path}" if self.config.health_path else "connections"
                slot.failure = (f"not ready within --start-timeout {self.config.start_timeout:g} s "
                                f"(no {what} on port {slot.port})")
                slot.timed_out = True
                self.output.fleet(f"{slot.label} {slot.failure}; killing it")
                self._set_state(slot, S.STOPPING)
                proc.signal_group(signal.SIGKILL)
        return await self._reap(slot, exited)

    async def _watch_stability(self, slot: _Slot, exited: asyncio.Future[int]) -> None:
        """After ``stable_after`` seconds up, forget earlier quick deaths (crash loop is over)."""
        done, _ = await asyncio.wait({exited}, timeout=slot.policy.stable_after)
        if not done:
            slot.policy.on_stable()
            if slot.crash_looping:
                slot.crash_looping = False
                self.output.fleet(f"{slot.label} is stable again")
                self._changed(slot)

    async def _reap(self, slot: _Slot, exited: asyncio.Future[int] | None = None) -> int:
        """Wait for the leader's exit, then kill what is left of its group and flush its output."""
        proc = slot.proc
        assert proc is not None
        returncode = await (exited if exited is not None else proc.wait())
        # The leader is gone; its children must not keep the port or the output pipe.
        proc.signal_group(signal.SIGKILL)
        self._liveness.forget(slot.id)  # hook
        if self._reaper is not None:
            self._reaper.worker_exited(proc.pid)  # hook: the groups that escaped it go too
        if self._watchdog is not None:
            self._watchdog.remove(proc.pgid)
        await proc.finish_output()
        return returncode

    # -- draining and stopping one process -------------------------------------------------
    async def _drain(self, slot: _Slot, deadline: float) -> None:
        """No new traffic for ``slot``; wait for its in-flight requests (via ``load``) until deadline."""
        if slot.state is S.READY:
            self._set_state(slot, S.DRAINING)
        if self._load is None or slot.state is not S.DRAINING:
            return
        while self._load(slot.id) > 0 and time.monotonic() < deadline and slot.state is S.DRAINING:
            await asyncio.sleep(0.05)

    async def _terminate(self, slot: _Slot, term_wait: float) -> None:
        """TERM the slot's process group, KILL it after ``term_wait``; returns once it has exited."""
        proc = slot.proc
        if proc is None or slot.state not in RUNNING_STATES:
            return
        if slot.state is not S.STOPPING:
            self._set_state(slot, S.STOPPING)
        proc.signal_group(signal.SIGTERM)
        gone = await self._wait_for(lambda: slot.proc is not proc, term_wait)
        if not gone:
            self.output.fleet(f"{slot.label} did not exit {term_wait:g} s after SIGTERM; killing it")
            proc.signal_group(signal.SIGKILL)
            await self._wait_for(lambda: slot.proc is not proc, None)

    async def _restart_slot(self, slot: _Slot, graceful_timeout: float) -> None:
        """Planned restart of one worker: drain, TERM, start again, wait until ready."""
        spawns_before = slot.spawns
        if slot.state is S.BACKOFF:
            slot.wake.set()  # start it now instead of after the backoff
        elif slot.state in RUNNING_STATES:
            slot.intent = Intent.RESTART
            deadline = time.monotonic() + graceful_timeout
            await self._drain(slot, deadline)
            await self._terminate(slot, max(deadline - time.monotonic(), min(MIN_TERM_WAIT, graceful_timeout)))
        else:
            return
        became = await self._wait_for(
            lambda: slot.spawns > spawns_before and (
                slot.state in (S.READY, S.FAILED, S.STOPPED)
                or (slot.state is S.BACKOFF)
            ),
            self.config.start_timeout + 5,
        )
        if self._stopping:
            return  # fleet is shutting down: not coming back is expected
        if not became or slot.state is not S.READY:
            raise SupervisorError(f"{slot.id} did not come back ready after its restart "
                                  f"(state {slot.state.value}, last exit {slot.last_exit})")

    # -- operations ------------------------------------------------------------------------
    async def reload(self) -> int:
        """Rolling restart, one worker at a time; returns how many were restarted.

        Ports are fixed per index, so a worker is replaced in place: the balancer stops sending
        it new requests (``on_change`` -> draining), in-flight ones finish, then it restarts.
        The others carry the traffic meanwhile. Stops at the first worker that does not come
        back ready, leaving the rest untouched.
        """
        async with self._ops:
            count = 0
            for index in sorted(self._slots):
                slot = self._slots.get(index)
                if slot is None or slot.state in (S.FAILED, S.STOPPED) or self._stopping:
                    continue
                self.output.fleet(f"{slot.label} reloading")
                await self._restart_slot(slot, self.config.graceful_timeout)
                count += 1
            return count

    async def restart_worker(self, worker_id: str, reason: str) -> None:
        """Graceful restart of one worker (``--max-memory``)."""
        async with self._ops:
            slot = next((s for s in self._slots.values() if s.id == worker_id), None)
            if slot is None or slot.state is not S.READY or self._stopping:
                return
            self.output.fleet(f"{slot.label} restarting: {reason}")
            await self._restart_slot(slot, self.config.graceful_timeout)

    async def scale(self, workers: int) -> None:
        """Run ``workers`` workers: start new indices (wait until ready) or stop the highest ones."""
        if workers < 1:
            raise SupervisorError("cannot scale below 1 worker (use fleet down to stop)")
        async with self._ops:
            if self._stopping:
                return
            last_port = self.config.worker_port(workers - 1)
            if last_port > 65535:
                raise SupervisorError(f"{workers} workers would need ports up to {last_port}")
            current = sorted(self._slots)
            self.desired = workers
            if workers > len(current):
                new_indices = [i for i in range(workers) if i not in self._slots]
                for index in new_indices:
                    try:
                        check_free(worker_host(self.config), self.config.worker_port(index),
                                   what=f"worker {self.config.worker_id(index)} port")
                    except PortInUseError as exc:
                        self.desired = len(current)
                        raise SupervisorError(str(exc)) from None
                added = [self._add_slot(index) for index in new_indices]
                self.output.fleet(f"scaling up to {workers} workers")
                await self._wait_for(lambda: all(s.state is not S.STARTING for s in added),
                                     self.config.start_timeout + 5)
            elif workers < len(current):
                self.output.fleet(f"scaling down to {workers} workers")
                removed = [self._slots[i] for i in current[workers:]]
                await asyncio.gather(*(self._retire(slot, self.config.graceful_timeout) for slot in removed))
                for slot in removed:
                    self._slots.pop(slot.index, None)

    async def _retire(self, slot: _Slot, graceful_timeout: float) -> None:
        slot.intent = Intent.STOP
        slot.wake.set()
        deadline = time.monotonic() + graceful_timeout
        await self._drain(slot, deadline)
        await self._terminate(slot, max(deadline - time.monotonic(), min(MIN_TERM_WAIT, graceful_timeout)))
        if slot.task is not None:
            # Its process has exited: the task only records that. Bounded all the same.
            _, pending = await asyncio.wait({slot.task}, timeout=KILL_WAIT)
            await cancel_and_wait(pending)

    async def stop(self, graceful_timeout: float) -> None:
        """Graceful stop of every worker: drain, TERM, KILL stragglers after the timeout."""
        self._stopping = True
        slots = list(self._slots.values())
        await asyncio.gather(*(self._retire(slot, graceful_timeout) for slot in slots))
        await self._end_descendants()  # hook: after the workers
        self._close_watchdog()

    async def kill_now(self) -> None:
        """Stop at once: SIGKILL every worker group and wait for the slot tasks to finish."""
        self._stopping = True
        for slot in self._slots.values():
            slot.intent = Intent.STOP
            slot.wake.set()
            if slot.proc is not None:
                slot.proc.signal_group(signal.SIGKILL)
        tasks = [slot.task for slot in self._slots.values() if slot.task is not None]
        if tasks:
            # The slot tasks end once their killed processes are reaped; one that does not
            # (a process stuck in the kernel) is cancelled rather than waited for forever.
            _, pending = await asyncio.wait(tasks, timeout=KILL_WAIT)
            stuck = await cancel_and_wait(pending)
            if stuck:
                self.output.fleet(f"{len(stuck)} worker task(s) did not end after SIGKILL; abandoned")
        await self._end_descendants()  # hook: after the workers
        self._close_watchdog()

    # --- reaper/heartbeat hooks (issue 13) -------------------------------------------------
    def _start_reaper(self, watchdog: Watchdog) -> Reaper:
        def label(pid: int) -> str:
            return next((s.label for s in self._slots.values() if s.proc is not None and s.proc.pid == pid),
                        f"pid {pid}")

        reaper = Reaper(watchdog.add, watchdog.remove, self.output.fleet, label)
        reaper.own(watchdog.pid)
        reaper.start()
        return reaper

    def _kill_hung(self, slot: _Slot, proc: WorkerProcess) -> None:
        """``--worker-timeout`` passed without a sign of life: kill it; the restart policy acts."""
        if slot.proc is not proc:
            return
        if slot.state in (S.READY, S.DRAINING):
            self._set_state(slot, S.STOPPING)  # no new requests for it from now on
        proc.signal_group(signal.SIGKILL)

    def loop_lags(self) -> dict[str, float]:
        """Event loop lag of each ready APP worker (``fleet_worker_event_loop_lag_seconds``)."""
        return self._liveness.lags()

    async def _end_descendants(self) -> None:
        await self._liveness.close()
        if self._reaper is not None:
            reaper, self._reaper = self._reaper, None
            await reaper.kill_all()
    # --- end hooks ---

    def _close_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
