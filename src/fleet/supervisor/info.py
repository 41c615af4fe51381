"""``WorkerInfo``: the supervisor's read-only snapshot of one worker.

This is what leaves the supervisor: the runner turns state changes into balancer calls
(``set_ready``, ``set_draining``, ``remove_upstream``), ``fleet status`` prints it, and
``fleet.metrics`` exports it. Frozen, so nobody outside the supervisor can change a worker's
state by accident.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    id: str  # "g3w1": generation 3, index 1; unique across generations (a crash restart keeps it)
    port: int
    pid: int | None  # None while no process runs (backoff, exited)
    state: str  # a WorkerState value: starting, ready, draining, stopping, exited, backoff, ...
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

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def label(self) -> str:
        return self.slot or self.id
