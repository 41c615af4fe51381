"""``Supervisor``: runs N workers, reloads them generation by generation, recycles, scales, stops.

Behind the built-in proxy a reload (``reload``) starts a new generation in the other port
block, ``--reload-batch`` workers at a time, each taking traffic as soon as it is ready; once
all are ready the old generation drains in the background (``drains``): no new clients,
pinned requests still reach it, and it gets SIGTERM when its requests and WebSockets have
ended or ``--drain-timeout`` passed. If a new worker cannot start, the new ones are stopped and
the old generation serves on, unchanged. With ``--no-proxy`` nothing can steer traffic away
from a worker, so a reload restarts workers one at a time on their own ports.

The supervisor knows nothing about the proxy: it announces each worker change to its
observers (``info.WorkerChange``) and waits for a draining worker through
``wait_idle(worker_id, timeout)`` (``Balancer.wait_idle``). Generation numbers come from
``generations.GenerationNumbers`` only: a recycle is a one-worker ``ReloadPlan``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Iterable

from fleet.appspec import AppSpec
from fleet.supervisor.settings import SupervisorViews
from fleet.ports import PortInUseError, check_free
from fleet.supervisor.command import worker_host
from fleet.supervisor.drains import Drains, WaitIdle
from fleet.supervisor.generations import (
    Placement, RecycleReason, ReloadPhase, ReloadPlan, port_list, request_limit, scale_placements,
)
from fleet.supervisor.info import Observer
from fleet.supervisor.lifecycle import WorkerLives
from fleet.supervisor.policy import WorkerState, term_wait
from fleet.supervisor.process import Output
from fleet.supervisor.reaper import Reaper
from fleet.supervisor.watchdog import Watchdog
from fleet.supervisor.worker import Intent, Worker
from fleet.tasks import cancel_and_wait

S = WorkerState

# When a held worker fails at start-up before the first one has settled, how long to wait for it.
BOOT_SETTLE_SECONDS = 3.0
# How long a worker task may take to record the exit of a killed process before it is cancelled.
KILL_WAIT = 10.0


class SupervisorError(RuntimeError):
    """Workers could not be started (or an operation failed); ``str()`` is for the user."""


class Supervisor(WorkerLives):
    """Spawns and watches the workers of one fleet. Use from one event loop."""

    def __init__(self, views: SupervisorViews, spec: AppSpec | None, *,
                 observers: Iterable[Observer] = (),
                 wait_idle: WaitIdle | None = None, output: Output | None = None) -> None:
        super().__init__(views, spec, observers=observers, output=output)
        self._wait_idle = wait_idle  # None: no proxy, nothing to drain through
        self.last_reload: dict[str, object] | None = None  # for fleet status
        self._stopping = False
        self._ops = asyncio.Lock()  # one reload/scale/recycle at a time
        self._drains = Drains(self._roster, wait_idle=wait_idle, set_state=self._set_state,
                              terminate=self._terminate, say=self.output.fleet,
                              graceful_timeout=lambda: self.views.workers.graceful_timeout)
        self._rng = random.Random()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def family(self) -> tuple[Reaper | None, Watchdog | None]:
        """The reaper and the orphan watchdog, for other children of the master (a managed
        nginx/HAProxy) that must be owned and killed like workers. Set once ``start`` ran."""
        return self._reaper, self._watchdog

    def _add(self, placement: Placement, generation: int, *, trial: bool, hold_output: bool = False) -> Worker:
        limit = request_limit(self.views.recycling.max_requests, self.views.recycling.max_requests_jitter,
                              self._rng.randrange(1 << 30))
        worker = self._new_worker(placement.index, generation, placement.block, trial=trial,
                                  hold_output=hold_output, request_limit=limit)
        if self._stopping:
            worker.intend(Intent.STOP)
        self._roster.add(worker)  # listed (and stopped with fleet) until it serves
        return worker

    def _serve(self, worker: Worker) -> Worker | None:
        """``worker`` now serves its index; returns the one it replaces (now retired), if any."""
        old = self._roster.serve(worker)
        self._changed(worker)  # its snapshot says current now
        return old

    def _check_ports(self, placements: list[Placement]) -> None:
        host = worker_host(self.views.frontend)
        for p in placements:
            port = self.views.worker_port(p.index, p.block)
            if port > 65535:
                raise SupervisorError(f"worker {p.index} would need port {port}, past 65535")
            try:
                check_free(host, port, what=f"worker port (index {p.index})")
            except PortInUseError as exc:
                raise SupervisorError(str(exc)) from None

    async def _settle(self, workers: list[Worker], timeout: float | None) -> Worker | None:
        """Wait until every worker is ready or one failed; the failed one (its output shown
        once: the first worker's if it fails the same way, else the failed one's)."""
        # STOPPED: fleet stops meanwhile (a stop ends every worker, new ones included).
        ended = (S.FAILED, S.STOPPED)
        await self._wait_for(lambda: all(w.state is S.READY for w in workers)
                             or any(w.state in ended for w in workers), timeout)
        failed = [w for w in workers if w.state in ended]
        for worker in failed:
            if worker.state is S.STOPPED:
                worker.failure = worker.failure or "stopped: fleet is stopping"
        if not failed and all(w.state is S.READY for w in workers):
            return None
        lead = workers[0]
        if failed and lead.state not in (S.READY, *ended):
            # The lead's output is live: if it is failing the same way, its traceback is the
            # one to show; give it a moment to settle before choosing whose to print.
            await self._wait_for(lambda: lead.state in (S.READY, *ended), BOOT_SETTLE_SECONDS)
            failed = [w for w in workers if w.state in ended]
        if not failed:  # not settled within the timeout
            first = next(w for w in workers if w.state is not S.READY)
            first.failure = first.failure or f"not ready within {timeout:g} s (state {first.state.value})"
        else:
            first = lead if lead.state in ended else min(failed, key=lambda w: w.index)
        for worker in workers:
            if worker.relay is not None:
                worker.relay.release(discard=worker is not first)
        return first

    # -- start -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every worker (generation 1, base block); return when all are ready.

        On failure raise SupervisorError and leave nothing running: a taken port (named with
        its owner, in either block), an app that cannot boot (its traceback printed once), a
        worker that keeps dying or is not ready within --start-timeout.
        """
        placements = [Placement(index, 0) for index in range(self.desired)]
        self._check_ports(placements)
        if self._wait_idle is not None:
            self._check_ports([Placement(index, 1) for index in range(self.desired)])
        self._watchdog = Watchdog()
        self._reaper = self._start_reaper(self._watchdog)  # subreaper + escaped groups
        self._starting_up = True
        generation = self._numbers.take()  # 1
        try:
            # Only the first worker talks at once while fleet starts: if the app is broken,
            # every worker prints the same traceback, and the user should read it once.
            for p in placements:
                self._serve(self._add(p, generation, trial=False, hold_output=p.index > 0))
            failed = await self._settle(list(self._roster.current.values()), None)
            if failed is not None:
                raise SupervisorError(f"worker {failed.id} failed to start: {failed.failure}")
        except BaseException:
            # Failed or cancelled (a signal while starting): nothing may keep running.
            await self.kill_now()
            raise
        finally:
            self._starting_up = False

    # -- reload ----------------------------------------------------------------------------
    async def reload(self) -> str:
        """Start a new generation and drain the old one; returns what happened, for the user.

        Raises SupervisorError when the new generation cannot start; the old one then serves
        on at full size.
        """
        async with self._ops:
            if self._stopping:
                raise SupervisorError("fleet is stopping")
            if self._wait_idle is None:
                return await self._reload_in_place()
            plan = ReloadPlan(self._numbers.upcoming, {i: w.block for i, w in self._roster.current.items()},
                              self.views.workers.reload_batch, self._roster.held_ports())
            notes = await self._end_blocking_drains(plan)
            try:
                self._check_ports(plan.placements)
            except SupervisorError as exc:
                plan.fail_before_start(str(exc))
                raise self._reload_failed(plan, notes) from None
            self._numbers.take(plan.generation)
            ports = port_list(self.views.worker_port(p.index, p.block) for p in plan.placements)
            self.output.fleet(f"reload: starting generation {plan.generation} on ports {ports}")
            started, failed = await self._start_plan(plan)
            if failed is not None:
                raise self._reload_failed(plan, notes)
            old = [w for w in map(self._serve, started) if w is not None]
            old_generations = sorted({w.generation for w in old})
            self._drains.begin(old, self.views.workers.drain_timeout)
            message = (f"generation {plan.generation} ready ({len(started)} workers on ports {ports}); "
                       f"generation {', '.join(map(str, old_generations))} draining (up to --drain-timeout "
                       f"{self.views.workers.drain_timeout:g} s)")
            self.last_reload = {"generation": plan.generation, "ok": True, "time": time.time(),
                                "message": message}
            self.output.fleet(message)
            return "\n".join([*notes, message])

    async def _end_blocking_drains(self, plan: ReloadPlan) -> list[str]:
        """Begin ``plan``: end first the drains that hold ports it needs (said in the answer)."""
        if plan.begin() is not ReloadPhase.ENDING_OLD_DRAIN:
            return []
        note = await self._drains.end_on(plan.blocking_drains())
        plan.old_drain_ended()
        return [note]

    async def _start_plan(self, plan: ReloadPlan) -> tuple[list[Worker], Worker | None]:
        """Start ``plan``'s workers batch by batch: (started, None) once all are ready, or
        (started, the failed one) after every started worker was stopped again."""
        started: list[Worker] = []
        while (batch := plan.next_batch()) is not None:
            new = [self._add(p, plan.generation, trial=True, hold_output=bool(started) or i > 0)
                   for i, p in enumerate(batch)]
            started += new
            failed = await self._settle(new, None)
            if failed is not None:
                plan.batch_failed(f"{failed.id} failed to start: {failed.failure}")
                await self._discard(started)
                plan.rolled_back()
                return started, failed
            plan.batch_ready([w.index for w in new])
        return started, None

    def _reload_failed(self, plan: ReloadPlan, notes: list[str]) -> SupervisorError:
        current = self._roster.current
        serving = sorted({w.generation for w in current.values()})
        message = (f"reload failed: generation {plan.generation} could not start ({plan.failure}); "
                   f"generation {', '.join(map(str, serving))} keeps serving with "
                   f"{len(current)} workers")
        self.last_reload = {"generation": plan.generation, "ok": False, "time": time.time(),
                            "message": message}
        self.output.fleet(message)
        return SupervisorError("\n".join([*notes, message]))

    async def _discard(self, workers: list[Worker]) -> None:
        """Stop workers of a failed generation; any request they took is let finish first."""
        await asyncio.gather(*(self._drains.drain_and_stop(w, self.views.workers.graceful_timeout)
                               for w in workers))

    async def _reload_in_place(self) -> str:
        """--no-proxy: restart each worker on its own port, one at a time (nothing can steer
        traffic away from it). Stops at the first worker that does not come back ready."""
        generation = self._numbers.take()
        count = 0
        current = self._roster.current
        for index in sorted(current):
            worker = current.get(index)
            if worker is None or worker.state in (S.FAILED, S.STOPPED) or self._stopping:
                continue
            self.output.fleet(f"{worker.label} reloading")
            await self._restart_in_place(worker, generation)
            count += 1
        return f"reloaded {count} workers in place (generation {generation}, --no-proxy)"

    async def _restart_in_place(self, worker: Worker, generation: int | None) -> None:
        """Planned restart on the same port: TERM (after its graceful timeout), start again,
        wait until ready. ``generation``: the id it takes (None keeps it)."""
        spawns_before = worker.spawns
        worker.next_generation = generation
        if worker.state is S.BACKOFF:
            if generation is not None:
                worker.generation, worker.next_generation = generation, None
            worker.wake.set()  # start it now instead of after the backoff
        elif worker.state in (S.STARTING, S.READY, S.DRAINING, S.STOPPING):
            worker.intend(Intent.RESTART)
            graceful = self.views.workers.graceful_timeout
            await self._terminate(worker, term_wait(time.monotonic() + graceful, time.monotonic(), graceful))
        else:
            return
        became = await self._wait_for(
            lambda: worker.spawns > spawns_before and worker.state in (S.READY, S.FAILED, S.STOPPED, S.BACKOFF),
            self.views.workers.start_timeout + 5,
        )
        if self._stopping:
            return  # fleet is shutting down: not coming back is expected
        if not became or worker.state is not S.READY:
            raise SupervisorError(f"{worker.id} did not come back ready after its restart "
                                  f"(state {worker.state.value}, last exit {worker.last_exit})")

    # -- recycle ---------------------------------------------------------------------------
    async def recycle(self, worker_id: str, reason: RecycleReason, detail: str = "") -> str | None:
        """Replace one serving worker (``--max-requests``, ``--max-age``, ``--max-memory``, a
        hung worker). Graceful reasons start a replacement in the other block and drain the old
        worker; ``reason.graceful`` False (hard memory limit, hung) kills it at once and restarts
        it on its port. Returns what happened, or None if the worker is not serving any more."""
        worker = next((w for w in self._roster.current.values() if w.id == worker_id), None)
        if worker is None or self._stopping:
            return None
        why = f"{reason.value}{': ' + detail if detail else ''}"
        if not reason.graceful:
            self.recycles[reason.value] = self.recycles.get(reason.value, 0) + 1
            self.output.fleet(f"{worker.label} killed ({why}); restarting it on its port")
            if worker.proc is not None:
                worker.intend(Intent.RESTART)
                worker.proc.signal_group(signal.SIGKILL)
            return f"{worker.id} killed and restarted ({reason.value})"
        async with self._ops:
            if not self._roster.is_current(worker) or worker.state is not S.READY or self._stopping:
                return None
            self.recycles[reason.value] = self.recycles.get(reason.value, 0) + 1
            if self._wait_idle is None:
                self.output.fleet(f"{worker.label} restarting in place ({why}; --no-proxy)")
                await self._restart_in_place(worker, None)
                return f"{worker.id} restarted in place"
            plan = ReloadPlan.one_worker(self._numbers.upcoming, worker.index, worker.block,
                                         self._roster.held_ports())
            notes = await self._end_blocking_drains(plan)
            self._check_ports(plan.placements)
            self.output.fleet(f"{worker.label} recycling ({why}): starting its replacement "
                              f"in generation {self._numbers.take(plan.generation)}")
            [new], failed = await self._start_plan(plan)
            if failed is not None:
                raise SupervisorError(f"recycle of {worker.id} failed: {failed.failure}; "
                                      f"{worker.id} keeps serving")
            self._serve(new)
            self._drains.begin([worker], self.views.workers.drain_timeout)
            return "\n".join([*notes, f"{worker.id} replaced by {new.id} ({reason.value})"])

    # -- scale -----------------------------------------------------------------------------
    async def scale(self, workers: int) -> None:
        """Run ``workers`` workers: start new indices (wait until ready) or stop the highest ones."""
        if workers < 1:
            raise SupervisorError("cannot scale below 1 worker (use fleet down to stop)")
        async with self._ops:
            if self._stopping:
                return
            roster = self._roster
            current = sorted(roster.current)
            if workers > len(current):
                placements = scale_placements({i: w.block for i, w in roster.current.items()},
                                              roster.held_ports(), workers)
                self._check_ports(placements)
                self.desired = workers
                generation = self._numbers.take()
                self.output.fleet(f"scaling up to {workers} workers (generation {generation})")
                added = [self._add(p, generation, trial=False) for p in placements]
                for worker in added:
                    self._serve(worker)
                await self._wait_for(lambda: all(w.state is not S.STARTING for w in added),
                                     self.views.workers.start_timeout + 5)
            elif workers < len(current):
                self.desired = workers
                self.output.fleet(f"scaling down to {workers} workers")
                removed = [roster.current[i] for i in current[workers:]]
                for worker in removed:  # no index to serve any more: it drains, then stops
                    roster.retire(worker)
                await asyncio.gather(*(self._drains.drain_and_stop(w, self.views.workers.graceful_timeout)
                                       for w in removed))

    # -- stop ------------------------------------------------------------------------------
    async def stop(self, graceful_timeout: float) -> None:
        """Graceful stop of every worker: TERM (the proxy has drained HTTP already), KILL
        stragglers after ``graceful_timeout``. Drains in progress are cut short."""
        self._stopping = True
        workers = self._all()  # before the drains end: an ended drain forgets its worker
        await self._drains.cancel()
        for worker in workers:
            worker.intend(Intent.STOP)
            worker.wake.set()
        await asyncio.gather(*(self._terminate(w, graceful_timeout) for w in workers))
        await self._join(workers)
        await self._end_descendants()  # after the workers
        self._close_watchdog()

    async def kill_now(self) -> None:
        """Stop at once: SIGKILL every worker group and wait for the worker tasks to finish."""
        self._stopping = True
        workers = self._all()
        await self._drains.cancel()
        for worker in workers:
            worker.intend(Intent.STOP)
            worker.wake.set()
            if worker.proc is not None:
                worker.proc.signal_group(signal.SIGKILL)
        await self._join(workers)
        await self._end_descendants()  # after the workers
        self._close_watchdog()

    async def _join(self, workers: list[Worker]) -> None:
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            # The tasks end once their processes are reaped; one that does not (a process
            # stuck in the kernel) is cancelled rather than waited for forever.
            _, pending = await asyncio.wait(tasks, timeout=KILL_WAIT)
            stuck = await cancel_and_wait(pending)
            if stuck:
                self.output.fleet(f"{len(stuck)} worker task(s) did not end after SIGKILL; abandoned")

    def _close_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

