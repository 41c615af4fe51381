"""``WorkerInfo``: the supervisor's read-only snapshot of one worker.

This is what leaves the supervisor: the runner turns state changes into balancer
``set_ready`` calls, ``fleet status`` prints it, and ``fleet.metrics`` exports it. Frozen, so
nobody outside the supervisor can change a worker's state by accident.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerInfo:
    index: int
    id: str  # "w0", "w1", ... (the metrics label; stays the same across restarts)
    port: int
    pid: int | None  # None while no process runs (backoff, exited)
    state: str  # a WorkerState value: starting, ready, draining, stopping, exited, backoff
    started_at: float | None  # time.time() of the current process's start
    restarts: int  # processes started for this index after the first
    crash_looping: bool  # it keeps dying within seconds of its start
    last_exit: int | None  # returncode (negative: killed by signal) of the previous process
    next_start_at: float | None = None  # time.time() of the next try while in backoff

    @property
    def ready(self) -> bool:
        return self.state == "ready"
