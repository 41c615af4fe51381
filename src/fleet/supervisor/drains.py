"""Replaced workers: drain in the background, then SIGTERM.

A worker replaced by a reload or a recycle is set draining: the proxy sends it no new
clients, but requests whose affinity cookie names it still reach it (a reconnecting Bokeh
page finds its session). It is waited for with the proxy's ``wait_idle`` (a future, no
polling here) until its in-flight requests and open WebSockets have ended or the drain
timeout passed, then it gets SIGTERM (SIGKILL after ``--graceful-timeout``).

A reload that needs the ports of a worker still draining ends that drain first (``end_on``);
the message says so. What this is not: it never starts workers. It knows the supervisor only
through what it is given (the roster of workers and four callables), so it imports nothing of
``manager``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from fleet.supervisor.policy import WorkerState, term_wait
from fleet.supervisor.worker import Intent, Roster, Worker
from fleet.tasks import cancel_and_wait

S = WorkerState
# How long a drained worker's task may take to record its exit.
JOIN_WAIT = 10.0

# The proxy's "wait until this worker has nothing in flight" (False at the timeout).
WaitIdle = Callable[[str, "float | None"], Awaitable[bool]]
SetState = Callable[[Worker, WorkerState], None]
# TERM the worker's group, KILL it after the given seconds; returns once it exited.
Terminate = Callable[[Worker, float], Awaitable[None]]


class Drains:
    def __init__(self, roster: Roster, *, wait_idle: WaitIdle | None, set_state: SetState,
                 terminate: Terminate, say: Callable[[str], None],
                 graceful_timeout: Callable[[], float]) -> None:
        self._roster = roster
        self._wait_idle = wait_idle  # None: no proxy, nothing to wait for
        self._set_state = set_state
        self._terminate = terminate
        self._say = say
        self._graceful_timeout = graceful_timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._handed_over: set[str] = set()  # drains end_on cut short and finishes itself

    def begin(self, workers: list[Worker], timeout: float) -> None:
        """Drain ``workers`` in the background (each until idle or ``timeout``), then TERM.
        They are set draining now, not when their task first runs: the reload's answer says
        "draining", and a request sent after it must not reach them."""
        for worker in workers:
            self._mark(worker)
            task = asyncio.ensure_future(self.drain_and_stop(worker, timeout))
            self._tasks[worker.id] = task
            task.add_done_callback(lambda _t, wid=worker.id: self._tasks.pop(wid, None))

    def _mark(self, worker: Worker) -> None:
        """``worker`` is replaced: it must not start again, and gets no new client if ready."""
        self._roster.retire(worker)
        worker.intend(Intent.STOP)
        worker.wake.set()
        if worker.state is S.READY:
            self._set_state(worker, S.DRAINING)

    async def drain_and_stop(self, worker: Worker, timeout: float) -> None:
        """Set ``worker`` draining (if ready), wait until idle (at most ``timeout``), TERM it,
        wait for its exit. A worker that is not ready (starting, in backoff) is just stopped."""
        self._mark(worker)
        try:
            if worker.state is S.DRAINING and self._wait_idle is not None:
                began = time.monotonic()
                idle = await self._wait_idle(worker.id, timeout)
                if not idle:
                    self._say(f"{worker.label} still had connections after {timeout:g} s "
                              f"of draining; stopping it")
                elif time.monotonic() - began >= 1.0:
                    self._say(f"{worker.label} drained after {time.monotonic() - began:.0f} s")
            graceful = self._graceful_timeout()
            await self._terminate(worker, term_wait(time.monotonic() + graceful, time.monotonic(), graceful))
            if worker.task is not None:
                _, pending = await asyncio.wait({worker.task}, timeout=JOIN_WAIT)
                await cancel_and_wait(pending)
        finally:
            if worker.id not in self._handed_over:
                self._roster.forget(worker)

    async def end_on(self, ports: list[tuple[int, int]]) -> str:
        """End at once the drains of the workers on ``ports`` ((index, block) pairs)."""
        victims = [w for w in list(self._roster.replaced.values()) if (w.index, w.block) in set(ports)]
        generations = ", ".join(str(g) for g in sorted({w.generation for w in victims}))
        message = (f"ending the drain of generation {generations} first "
                   f"({', '.join(w.id for w in victims)}; their open connections are closed)")
        self._say(message)
        # The cut drains leave their workers listed: the stops below finish and forget them.
        ids = {w.id for w in victims}
        self._handed_over |= ids
        try:
            await cancel_and_wait([self._tasks[w.id] for w in victims if w.id in self._tasks])
        finally:
            self._handed_over -= ids
        await asyncio.gather(*(self.drain_and_stop(w, 0.0) for w in victims))
        return message

    async def cancel(self) -> None:
        """Fleet stops: the drains end here, the stop terminates the workers itself."""
        await cancel_and_wait(list(self._tasks.values()))
