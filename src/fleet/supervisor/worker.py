"""The supervisor's record of one worker, what it should do next, and which map holds it.

``Worker`` is one worker (one id, one port) as ``lifecycle`` and ``manager`` see it. Two of its
fields change only through a table (``fleet.statetable``), like its ``state``:

- ``intent`` (``INTENTS``): what its task does after the process exits: restart it with the
  crash policy (RUN), restart it at once on purpose (RESTART), or not at all (STOP, final);
- ``membership`` (``MEMBERSHIP``): which of the supervisor's maps holds it. ``Roster`` owns
  those maps (``current`` by index, ``pending``, ``replaced``), so operations and drains move a
  worker between them through one door.

Pure bookkeeping: no processes, no clock.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from fleet.statetable import StateTable
from fleet.supervisor.generations import slot_label, worker_id
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.policy import RestartPolicy, WorkerState
from fleet.supervisor.process import LineRelay, WorkerProcess


class Intent(enum.Enum):
    RUN = "run"  # restart after an exit (crash policy)
    RESTART = "restart"  # planned restart on the same port (--no-proxy reload, hard recycle)
    STOP = "stop"  # do not start again (shutdown, scale down, replaced by a new generation)


_I = Intent
INTENTS: StateTable[Intent] = StateTable("worker intent", {
    _I.RUN: {_I.RESTART, _I.STOP},
    # Two planned restarts before the process exited (a hard recycle of a hung worker) are one.
    _I.RESTART: {_I.RUN, _I.RESTART, _I.STOP},
    # Fleet's stop marks every worker, replaced ones (already STOP) too: still one stop.
    _I.STOP: {_I.STOP},
})


class Membership(enum.Enum):
    NEW = "new"  # created, in no map yet
    PENDING = "pending"  # started by an operation, not serving yet (listed, stopped with fleet)
    CURRENT = "current"  # serves its index
    REPLACED = "replaced"  # replaced or scaled away: drains, then stops
    GONE = "gone"  # stopped and forgotten; final


_M = Membership
MEMBERSHIP: StateTable[Membership] = StateTable("worker membership", {
    _M.NEW: {_M.PENDING},
    _M.PENDING: {_M.CURRENT, _M.REPLACED},  # serves, or its operation failed and it is stopped
    _M.CURRENT: {_M.REPLACED},
    _M.REPLACED: {_M.GONE},
    _M.GONE: set(),
})


@dataclass
class Worker:
    index: int
    generation: int
    block: int  # 0: the --base-port block, 1: the --surge-base-port block
    port: int
    state: WorkerState = WorkerState.STARTING
    intent: Intent = Intent.RUN
    membership: Membership = Membership.NEW
    # Started by a reload, a recycle or a scale-up: a boot failure fails that operation
    # (the old worker serves on) instead of being retried. Cleared once ready.
    trial: bool = False
    request_limit: int = 0
    proc: WorkerProcess | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    spawns: int = 0
    planned_restarts: int = 0  # restarts on purpose (in-place reload, hard recycle): not crashes
    started_at: float | None = None  # wall clock, for WorkerInfo
    started_mono: float = 0.0
    ready_since: float | None = None  # monotonic
    ever_ready: bool = False
    crash_looping: bool = False
    last_exit: int | None = None
    next_start_at: float | None = None
    failure: str | None = None  # why it went FAILED, or why its last start timed out
    timed_out: bool = False  # the current process was not ready within --start-timeout
    relay: LineRelay | None = None  # output of the current (or last) process
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    next_generation: int | None = None  # --no-proxy reload: the id it takes at its restart
    announced: WorkerInfo | None = None  # the snapshot its last WorkerChange carried

    @property
    def id(self) -> str:
        return worker_id(self.generation, self.index)

    @property
    def slot(self) -> str:
        return slot_label(self.block, self.index)

    @property
    def label(self) -> str:
        return f"{self.id}:{self.port}"

    def intend(self, intent: Intent) -> None:
        self.intent = INTENTS.move(self.intent, intent)


class Roster:
    """The supervisor's three maps of workers; every move between them checks ``MEMBERSHIP``."""

    def __init__(self) -> None:
        self.current: dict[int, Worker] = {}  # index -> the worker that serves it
        self.pending: dict[str, Worker] = {}  # id -> started by an operation, not serving yet
        self.replaced: dict[str, Worker] = {}  # id -> a worker still draining or stopping

    def _move(self, worker: Worker, membership: Membership) -> None:
        worker.membership = MEMBERSHIP.move(worker.membership, membership)

    def add(self, worker: Worker) -> None:
        """A new worker: listed (and stopped with fleet) until it serves."""
        self._move(worker, _M.PENDING)
        self.pending[worker.id] = worker

    def serve(self, worker: Worker) -> Worker | None:
        """``worker`` now serves its index; returns the worker it displaced, now REPLACED."""
        self._move(worker, _M.CURRENT)
        self.pending.pop(worker.id, None)
        old = self.current.get(worker.index)
        self.current[worker.index] = worker
        if old is not None:
            self.retire(old)
        return old

    def retire(self, worker: Worker) -> None:
        """``worker`` is replaced, scaled away or its operation failed: it drains, then stops.
        Nothing if it is already retired (a drain ended early marks it again)."""
        if worker.membership is _M.REPLACED:
            return
        if worker.membership is _M.CURRENT and self.current.get(worker.index) is worker:
            del self.current[worker.index]
        self.pending.pop(worker.id, None)
        self._move(worker, _M.REPLACED)
        self.replaced[worker.id] = worker

    def forget(self, worker: Worker) -> None:
        """``worker`` has stopped after its drain: in no map any more. Nothing if it is
        already gone (two stops of one worker raced: the second has nothing to forget)."""
        if worker.membership is _M.GONE:
            return
        if self.replaced.get(worker.id) is worker:
            del self.replaced[worker.id]
        self._move(worker, _M.GONE)

    def is_current(self, worker: Worker) -> bool:
        return self.current.get(worker.index) is worker

    def all(self) -> list[Worker]:
        return [*self.current.values(), *self.pending.values(), *self.replaced.values()]

    def held_ports(self) -> frozenset[tuple[int, int]]:
        """(index, block) of every replaced worker: ports a new worker cannot take yet."""
        return frozenset((w.index, w.block) for w in self.replaced.values())


__all__ = ["INTENTS", "MEMBERSHIP", "Intent", "Membership", "Roster", "Worker"]
