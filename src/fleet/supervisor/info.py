"""What leaves the supervisor: ``WorkerInfo`` snapshots and ``WorkerChange`` events.

The supervisor announces every change of a worker as a ``WorkerChange`` (its snapshot before
and after) to its observers: the master's front end turns it into balancer or data-plane calls,
``fleet.hooks`` runs ``--on-ready``/``--on-exit``/``--on-crash-loop``, the status page logs
exits. ``fleet status`` and ``fleet.metrics`` read the current snapshots (``workers()``). Both
are frozen, so nobody outside the supervisor can change a worker's state by accident, and no
observer keeps old snapshots to compare: the event says what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fleet.supervisor.policy import WorkerState


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    id: str  # "g3w1": generation 3, index 1; unique across generations (a crash restart keeps it)
    port: int
    pid: int | None  # None while no process runs (backoff, exited)
    state: WorkerState  # a str too: its value ("ready") is what status and metrics print
    started_at: float | None  # time.time() of the current process's start
    restarts: int  # processes started for this worker after the first (crash restarts)
    crash_looping: bool  # it keeps dying within seconds of its start
    last_exit: int | None  # returncode (negative: killed by signal) of the previous process
    next_start_at: float | None = None  # time.time() of the next try while in backoff
    generation: int = 1
    slot: str = ""  # the metrics label: "w<i>" in the --base-port block, "s<i>" in the surge block
    ready_since: float | None = None  # time.monotonic() it became ready (for --max-age)
    request_limit: int = 0  # its --max-requests with jitter; 0 = off
    current: bool = True  # False: replaced, it drains or stops

    def __post_init__(self) -> None:
        # Built from a plain value too (a standalone proxy's view, tests): one type inside.
        if not isinstance(self.state, WorkerState):
            object.__setattr__(self, "state", WorkerState(self.state))

    @property
    def ready(self) -> bool:
        return self.state is WorkerState.READY

    @property
    def label(self) -> str:
        return self.slot or self.id


@dataclass(frozen=True)
class WorkerChange:
    """One announced change of one worker. ``before`` is the snapshot announced last (None for
    a worker announced for the first time); the state may be the same in both (its pid became
    known, it stopped crash-looping, it now serves its index)."""

    before: WorkerInfo | None
    after: WorkerInfo

    def entered(self, state: WorkerState) -> bool:
        """The worker is in ``state`` now and was not before."""
        return self.after.state is state and (self.before is None or self.before.state is not state)

    @property
    def started_crash_looping(self) -> bool:
        return self.after.crash_looping and not (self.before is not None and self.before.crash_looping)


# A supervisor's observer: called on the event loop, in order, for every change.
Observer = Callable[[WorkerChange], None]
