"""One worker's life on the event loop: spawn, readiness, crash restarts, SIGTERM, reaping.

``Worker`` is the supervisor's record of one worker (one id, one port); ``WorkerLives`` runs
each worker's task (``_run``), which owns the worker's process from spawn to exit and asks
``RestartPolicy`` what to do after an exit. Operations (``manager.Supervisor``) never restart a
process themselves: they set the worker's ``intent`` and send signals; the task sees the exit
and acts on the intent. Every state change goes through ``_set_state``, which checks the
lifecycle table; every change a worker's snapshot shows is announced to the observers as a
``WorkerChange`` (``_changed``).

Whether a worker should stop is tracked in one place, its ``intent`` (``worker.INTENTS``):
``Intent.STOP`` once fleet stops, the worker is scaled away or it has been replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any, Callable, Iterable

from fleet.appspec import AppSpec
from fleet.supervisor.settings import SupervisorViews
from fleet.ports import PortInUseError, check_free
from fleet.supervisor.command import probe_host, worker_command, worker_host
from fleet.supervisor.generations import GenerationNumbers
from fleet.supervisor.heartbeat import Liveness
from fleet.supervisor.info import Observer, WorkerChange, WorkerInfo
from fleet.supervisor.policy import RUNNING_STATES, WorkerState, is_boot_error, transition
from fleet.supervisor.probe import wait_ready
from fleet.supervisor.process import LineRelay, Output, WorkerProcess
from fleet.supervisor.reaper import Reaper
from fleet.supervisor.watchdog import Watchdog
from fleet.supervisor.worker import Intent, Roster, Worker
from fleet.tasks import cancel_and_wait, wait_event

S = WorkerState


class WorkerLives:
    """The per-worker tasks of one supervisor; ``manager.Supervisor`` adds the operations."""

    def __init__(self, views: SupervisorViews, spec: AppSpec | None, *,
                 observers: Iterable[Observer] = (), output: Output | None = None) -> None:
        self._views = views  # frozen; a live reload replaces them (the ``views`` setter)
        self.spec = spec
        self.desired = views.workers.workers
        self._observers: list[Observer] = list(observers)
        self.output = output or Output()
        self._roster = Roster()  # current (by index), pending and replaced workers
        self._numbers = GenerationNumbers()
        self._starting_up = False
        self._watchdog: Watchdog | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.recycles: dict[str, int] = {}  # reason -> count (fleet_worker_recycles_total)
        # Descendants die with fleet (subreaper) and hung workers are replaced (--worker-timeout).
        self._reaper: Reaper | None = None
        self._helpers: set[int] = set()  # the master's other children (proxy processes)
        self._liveness = Liveness(views.workers.worker_timeout, views.workers.health_path,
                                  probe_host(views.frontend), self.output.fleet)

    @property
    def views(self) -> SupervisorViews:
        return self._views

    @views.setter
    def views(self, views: SupervisorViews) -> None:
        """A reloaded configuration: read at each later start, drain and stop; the liveness
        rules (``--worker-timeout``, ``--health-path``) for the workers spawned from now on."""
        self._views = views
        self._liveness.renew(views.workers.worker_timeout, views.workers.health_path)

    # -- snapshots -------------------------------------------------------------------------
    def _info(self, worker: Worker) -> WorkerInfo:
        running = worker.proc is not None and worker.state in RUNNING_STATES
        return WorkerInfo(
            index=worker.index, id=worker.id, port=worker.port,
            pid=worker.proc.pid if running and worker.proc else None,
            state=worker.state.value,
            started_at=worker.started_at if running else None,
            restarts=max(0, worker.spawns - 1 - worker.planned_restarts),
            crash_looping=worker.crash_looping,
            last_exit=worker.last_exit,
            next_start_at=worker.next_start_at if worker.state is S.BACKOFF else None,
            generation=worker.generation, slot=worker.slot,
            ready_since=worker.ready_since if worker.state is S.READY else None,
            request_limit=worker.request_limit,
            current=self._roster.is_current(worker),
        )

    @property
    def generation(self) -> int:
        """The last generation number used (``generations.GenerationNumbers``)."""
        return self._numbers.last

    def workers(self) -> list[WorkerInfo]:
        """Snapshots of the serving workers (by index), then of the replaced ones still alive."""
        roster = self._roster
        current = [self._info(w) for _, w in sorted(roster.current.items())]
        others = [*roster.pending.values(), *roster.replaced.values()]
        return current + sorted((self._info(w) for w in others), key=lambda i: (i.generation, i.index))

    def _all(self) -> list[Worker]:
        return self._roster.all()

    def observe(self, observer: Observer) -> None:
        """Announce every later worker change to ``observer`` too (after the earlier ones)."""
        self._observers.append(observer)

    def _set_state(self, worker: Worker, new: WorkerState) -> None:
        worker.state = transition(worker.state, new)
        self._changed(worker)

    def _changed(self, worker: Worker) -> None:
        """Announce ``worker``'s new snapshot, with the one announced before it, to every
        observer in order; one observer's error neither hides the change from the next nor
        leaves a waiter waiting (it is raised once all have seen it)."""
        info = self._info(worker)
        change = WorkerChange(worker.announced, info)
        worker.announced = info
        error: BaseException | None = None
        try:
            for observer in self._observers:
                try:
                    observer(change)
                except BaseException as exc:  # re-raised below, after the other observers
                    error = error or exc
            if error is not None:
                raise error
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

    def _new_worker(self, index: int, generation: int, block: int, *, trial: bool = False,
                    hold_output: bool = False, request_limit: int = 0) -> Worker:
        worker = Worker(index=index, generation=generation, block=block,
                        port=self.views.worker_port(index, block), trial=trial,
                        request_limit=request_limit)
        worker.task = asyncio.ensure_future(self._run(worker, hold_output))
        return worker

    # -- one worker's life -----------------------------------------------------------------
    async def _spawn(self, worker: Worker, hold_output: bool) -> int | None:
        """Start a process for ``worker``; return an exit code if it could not even be started."""
        if worker.spawns > 0:  # the first start was checked by the operation as a batch
            problem = await self._port_released(worker)
            if problem is not None:
                self.output.fleet(f"{worker.label} cannot start: {problem}")
                return None
        command = worker_command(self.views, self.spec, worker.index, self.desired,
                                 worker_id=worker.id, port=worker.port)
        # One log file per port slot (w0.log, s0.log), not per id: reloads must not add files.
        log_path = os.path.join(self.views.log_dir, f"{worker.slot}.log") if self.views.log_dir else None
        if log_path:
            os.makedirs(self.views.log_dir or ".", exist_ok=True)
        relay = worker.relay = LineRelay(worker.label, self.output, log_path, hold=hold_output)
        worker.proc = None
        worker.timed_out = False
        worker.spawns += 1
        worker.started_at = time.time()
        worker.started_mono = time.monotonic()
        # A heartbeat file for APP workers (--worker-timeout); FLEET_FAMILY for the watchdog.
        extras = self._liveness.prepare(worker.id, beats=self.views.workers.cmd is None)
        try:
            with self._reaper.spawning() if self._reaper else contextlib.nullcontext():
                family = self._watchdog.family_env() if self._watchdog else {}
                worker.proc = await WorkerProcess.spawn(command.argv, {**command.env, **extras.env, **family},
                                                        relay, pass_fds=extras.pass_fds)
                if self._reaper is not None:
                    self._reaper.own(worker.proc.pid, worker.proc.pgid)  # a worker, not an orphan
        except OSError as exc:
            relay.close()
            self._liveness.forget(worker.id)
            self.output.fleet(f"{worker.label} cannot execute {command.argv[0]}: {exc.strerror}")
            return 127
        if self._watchdog is not None:
            self._watchdog.add(worker.proc.pgid)
        return None

    async def _port_released(self, worker: Worker, patience: float = 2.0) -> PortInUseError | None:
        """Wait briefly for the worker's port: the previous process group may still be dying."""
        deadline = time.monotonic() + patience
        while True:
            try:
                check_free(worker_host(self.views.frontend), worker.port, what=f"worker {worker.id} port")
                return None
            except PortInUseError as exc:
                if time.monotonic() >= deadline:
                    return exc
            await asyncio.sleep(0.05)

    async def _run(self, worker: Worker, hold_output: bool) -> None:
        first = True
        while True:
            if not first:
                self._set_state(worker, S.STARTING)
            # fleet upgrade: a process the master spawned before its execv (supervisor.adoption).
            adopted = first and worker.proc is not None
            spawn_failure = None if adopted else await self._spawn(worker, hold_output and first)
            first = False
            proc = worker.proc
            if proc is None:
                returncode: int | None = spawn_failure
            else:
                if worker.intent is Intent.STOP and not adopted:  # an adopted one may be draining
                    proc.signal_group(signal.SIGKILL)  # a stop came while it was being spawned
                self._changed(worker)  # the pid is known now
                returncode = await (self._supervise_adopted(worker) if adopted else self._supervise(worker))
            worker.last_exit = returncode
            worker.proc = None
            worker.ready_since = None
            self._set_state(worker, S.EXITED)
            if worker.intent is Intent.STOP:
                self._set_state(worker, S.STOPPED)
                return
            if worker.intent is Intent.RESTART:
                worker.intend(Intent.RUN)
                worker.planned_restarts += 1
                if worker.next_generation is not None:
                    worker.generation, worker.next_generation = worker.next_generation, None
                continue
            trial = self._starting_up or worker.trial
            decision = worker.policy.on_exit(worker.started_mono, time.monotonic(), returncode,
                                             ever_ready=worker.ever_ready, starting_up=trial)
            if worker.timed_out and trial:
                self._set_state(worker, S.FAILED)
                return
            if decision.give_up:
                worker.failure = decision.reason
                if is_boot_error(returncode):
                    worker.failure += "; see its output above"
                self._set_state(worker, S.FAILED)
                return
            if worker.relay is not None:
                worker.relay.release()  # held while it started: show why it died
            worker.crash_looping = decision.crash_looping
            looping = " crash-looping:" if decision.crash_looping else ""
            self.output.fleet(f"{worker.label}{looping} {decision.reason}; restarting in {decision.delay:.1f} s")
            worker.next_start_at = time.time() + decision.delay
            worker.wake.clear()
            self._set_state(worker, S.BACKOFF)
            await wait_event(worker.wake, decision.delay)  # woken early by an operation
            worker.next_start_at = None
            if worker.intent is Intent.STOP:
                self._set_state(worker, S.STOPPED)
                return
            if worker.intent is not Intent.RUN:
                worker.intend(Intent.RUN)

    async def _supervise(self, worker: Worker) -> int:
        """From spawn to exit of one process; returns its exit code."""
        proc = worker.proc
        assert proc is not None
        exited = asyncio.ensure_future(proc.wait())
        settings = self.views.workers
        probe = asyncio.ensure_future(
            wait_ready(probe_host(self.views.frontend), worker.port, settings.health_path, settings.start_timeout)
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
                if worker.state is S.STARTING:
                    worker.ever_ready = True
                    worker.trial = False
                    worker.ready_since = time.monotonic()
                    proc.relay.release()
                    self._set_state(worker, S.READY)
                    self.output.fleet(f"{worker.label} ready (pid {proc.pid}, "
                                      f"{time.monotonic() - worker.started_mono:.1f} s)")
                    # From now on it must prove it is alive (--worker-timeout).
                    self._liveness.watch(worker.id, worker.label, worker.port,
                                         lambda: self._kill_hung(worker, proc))
                    await self._watch_stability(worker, exited)
            elif worker.state is S.STARTING:
                what = f"a 2xx from {settings.health_path}" if settings.health_path else "connections"
                worker.failure = (f"not ready within --start-timeout {settings.start_timeout:g} s "
                                  f"(no {what} on port {worker.port})")
                worker.timed_out = True
                self.output.fleet(f"{worker.label} {worker.failure}; killing it")
                self._set_state(worker, S.STOPPING)
                proc.signal_group(signal.SIGKILL)
        return await self._reap(worker, exited)

    async def _supervise_adopted(self, worker: Worker) -> int:
        """An adopted worker was ready already: watch it (--worker-timeout) until it exits."""
        proc = worker.proc
        assert proc is not None
        exited = asyncio.ensure_future(proc.wait())
        self._liveness.watch(worker.id, worker.label, worker.port, lambda: self._kill_hung(worker, proc))
        try:
            await self._watch_stability(worker, exited)
        except BaseException:
            await cancel_and_wait([exited])
            raise
        return await self._reap(worker, exited)

    async def _watch_stability(self, worker: Worker, exited: asyncio.Future[int]) -> None:
        """After ``stable_after`` seconds up, forget earlier quick deaths (crash loop is over)."""
        done, _ = await asyncio.wait({exited}, timeout=worker.policy.stable_after)
        if not done:
            worker.policy.on_stable()
            if worker.crash_looping:
                worker.crash_looping = False
                self.output.fleet(f"{worker.label} is stable again")
                self._changed(worker)

    async def _reap(self, worker: Worker, exited: asyncio.Future[int]) -> int:
        """Wait for the leader's exit, then kill what is left of its group and flush its output."""
        proc = worker.proc
        assert proc is not None
        returncode = await exited
        # The leader is gone; its children must not keep the port or the output pipe.
        proc.signal_group(signal.SIGKILL)
        self._liveness.forget(worker.id)
        if self._reaper is not None:
            self._reaper.worker_exited(proc.pid)  # the groups that escaped it go too
        if self._watchdog is not None:
            self._watchdog.remove(proc.pgid)
        await proc.finish_output()
        return returncode

    # -- descendants and hung workers (subreaper, --worker-timeout) -------------------------
    def helper_spawning(self) -> Any:
        """Around the spawn of another child of the master (a proxy process of
        ``--proxy-processes``): the reaper must not judge it before ``own_helper``."""
        return self._reaper.spawning() if self._reaper is not None else contextlib.nullcontext()

    def own_helper(self, pid: int) -> None:
        """Declare a child of the master that is not a worker: the reaper leaves its exit
        status to the event loop that waits for it."""
        self._helpers.add(pid)
        if self._reaper is not None:
            self._reaper.own(pid)

    def _start_reaper(self, watchdog: Watchdog) -> Reaper:
        def label(pid: int) -> str:
            return next((w.label for w in self._all() if w.proc is not None and w.proc.pid == pid),
                        f"pid {pid}")

        reaper = Reaper(watchdog.add, watchdog.remove, self.output.fleet, label)
        reaper.own(watchdog.pid)
        for pid in self._helpers:
            reaper.own(pid)
        reaper.start()
        return reaper

    def _kill_hung(self, worker: Worker, proc: WorkerProcess) -> None:
        """--worker-timeout passed without a sign of life: kill it now; a serving worker is
        restarted on its port at once (a recycle, reason ``hung``), a draining one just ends."""
        if worker.proc is not proc:
            return
        if worker.intent is Intent.RUN:
            worker.intend(Intent.RESTART)
            self.recycles["hung"] = self.recycles.get("hung", 0) + 1
        if worker.state in (S.READY, S.DRAINING):
            self._set_state(worker, S.STOPPING)  # no new requests for it from now on
        proc.signal_group(signal.SIGKILL)

    def loop_lags(self) -> dict[str, float]:
        """Event loop lag of each ready APP worker (``fleet_worker_event_loop_lag_seconds``)."""
        return self._liveness.lags()

    async def _end_descendants(self) -> None:
        await self._liveness.close()
        if self._reaper is not None:
            reaper, self._reaper = self._reaper, None
            await reaper.kill_all()

    # -- stopping one process --------------------------------------------------------------
    async def _terminate(self, worker: Worker, term_wait: float) -> None:
        """TERM the worker's process group, KILL it after ``term_wait``; returns once it exited."""
        proc = worker.proc
        if proc is None or worker.state not in RUNNING_STATES:
            return
        if worker.state is not S.STOPPING:
            self._set_state(worker, S.STOPPING)
        proc.signal_group(signal.SIGTERM)
        gone = await self._wait_for(lambda: worker.proc is not proc, term_wait)
        if not gone:
            self.output.fleet(f"{worker.label} did not exit {term_wait:g} s after SIGTERM; killing it")
            proc.signal_group(signal.SIGKILL)
            await self._wait_for(lambda: worker.proc is not proc, None)
