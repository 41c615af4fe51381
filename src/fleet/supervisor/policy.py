"""How a worker lives and how it is restarted: pure logic, no processes, no clock.

``WorkerState`` and ``WORKER_LIFECYCLE`` (a ``fleet.statetable.StateTable`` built from
``TRANSITIONS``) are the whole lifecycle in one table (like h11's ``_state.py``): a move that is
not in the table raises ``InvalidTransition``, so a bug in the
supervisor shows up as an exception instead of a worker stuck in a state nobody expected::

    STARTING -> READY -> DRAINING -> STOPPING -> EXITED -> STARTING   (reload, a planned restart)
    any running state -> EXITED -> BACKOFF -> STARTING               (crash, with backoff)
    EXITED -> FAILED        (cannot boot while fleet starts: fleet gives up and says why)
    EXITED/BACKOFF -> STOPPED   (shutdown or scale down; final)

``RestartPolicy`` decides what happens after a worker exits. It takes ``now`` as an argument,
so the backoff sequence and crash-loop detection are unit-tested without sleeping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fleet import statetable

# Exit code of ``python -m fleet.worker`` when the app cannot even be loaded (gunicorn's
# WORKER_BOOT_ERROR). 126/127 are the shell's "cannot execute" / "command not found", the
# same outcome for a ``--cmd`` worker.
BOOT_ERROR = 3
SHELL_BOOT_ERRORS = frozenset({126, 127})


class WorkerState(enum.StrEnum):
    """A str as well, so ``fleet status --json``, the status page and the metrics print the
    value unchanged; compare members with ``is`` in fleet's own code."""

    STARTING = "starting"  # process spawned, not yet accepting connections
    READY = "ready"  # receives traffic
    DRAINING = "draining"  # no new traffic; in-flight requests finish
    STOPPING = "stopping"  # SIGTERM sent
    EXITED = "exited"  # process gone; the supervisor decides what next
    BACKOFF = "backoff"  # waiting before the next start
    FAILED = "failed"  # could not boot while fleet started; final
    STOPPED = "stopped"  # stopped on purpose (shutdown, scale down); final


_S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.STARTING: frozenset({_S.READY, _S.STOPPING, _S.EXITED}),
    _S.READY: frozenset({_S.DRAINING, _S.STOPPING, _S.EXITED}),
    _S.DRAINING: frozenset({_S.STOPPING, _S.EXITED}),
    _S.STOPPING: frozenset({_S.EXITED}),
    _S.EXITED: frozenset({_S.STARTING, _S.BACKOFF, _S.FAILED, _S.STOPPED}),
    _S.BACKOFF: frozenset({_S.STARTING, _S.STOPPED}),
    _S.FAILED: frozenset(),
    _S.STOPPED: frozenset(),
}

# States in which a worker process exists.
RUNNING_STATES = frozenset({_S.STARTING, _S.READY, _S.DRAINING, _S.STOPPING})


class InvalidTransition(statetable.InvalidTransition):
    """The supervisor tried a move the lifecycle table does not allow (a fleet bug)."""


# No same-state move: every caller changes a worker's state or leaves it alone.
WORKER_LIFECYCLE = statetable.StateTable("worker", TRANSITIONS, error=InvalidTransition)


def transition(current: WorkerState, new: WorkerState) -> WorkerState:
    """Return ``new`` if the table allows ``current -> new``; raise otherwise."""
    return WORKER_LIFECYCLE.move(current, new)


def is_boot_error(returncode: int | None) -> bool:
    return returncode == BOOT_ERROR or returncode in SHELL_BOOT_ERRORS


@dataclass(frozen=True)
class RestartDecision:
    delay: float  # seconds to wait before starting again
    crash_looping: bool  # report it: it keeps dying soon after its start
    give_up: bool  # fleet is still starting and this worker cannot boot: stop everything
    reason: str  # for the log line


@dataclass
class RestartPolicy:
    """Exponential backoff for workers that die soon after they start.

    A worker that ran for at least ``stable_after`` seconds before dying was healthy and
    something killed it: it is restarted after ``initial_delay``. Each death within
    ``stable_after`` of its start doubles the delay up to ``max_delay``; ``loop_after`` such
    deaths in a row mark it crash-looping (reported, never silent) until it stays up again.

    While fleet itself is starting (``starting_up``), a worker that was never ready is given
    up on at once for a boot error and after ``loop_after`` quick deaths otherwise: the user
    is at the terminal and a clear error beats an endless retry.
    """

    initial_delay: float = 0.1
    max_delay: float = 30.0
    factor: float = 2.0
    stable_after: float = 5.0
    loop_after: int = 3
    quick_deaths: int = 0  # consecutive deaths within stable_after of the start

    def on_exit(self, started_at: float, now: float, returncode: int | None, *,
                ever_ready: bool, starting_up: bool) -> RestartDecision:
        """Decide after a worker that started at ``started_at`` exited at ``now``."""
        lived = now - started_at
        if lived < self.stable_after:
            self.quick_deaths += 1
        else:
            self.quick_deaths = 0
        if starting_up and not ever_ready:
            if is_boot_error(returncode):
                return RestartDecision(0.0, False, True, f"the app cannot boot (exit code {returncode})")
            if self.quick_deaths >= self.loop_after:
                return RestartDecision(0.0, True, True,
                                       f"exited {self.quick_deaths} times before becoming ready "
                                       f"(last exit code {returncode})")
        delay = self.next_delay()
        looping = self.quick_deaths >= self.loop_after
        if self.quick_deaths:
            reason = f"exited with code {returncode} after {lived:.1f} s ({self.quick_deaths} quick exits in a row)"
        else:
            reason = f"exited with code {returncode} after {lived:.1f} s"
        return RestartDecision(delay, looping, False, reason)

    def next_delay(self) -> float:
        """0.1, 0.2, 0.4, ... capped at ``max_delay``; ``initial_delay`` after a healthy run."""
        exponent = max(0, self.quick_deaths - 1)
        # Compare exponents, not powers: 2.0 ** 2000 overflows a float in a long crash loop.
        if exponent > 64:
            return self.max_delay
        return min(self.max_delay, self.initial_delay * self.factor ** exponent)

    def is_stable(self, started_at: float, now: float) -> bool:
        return now - started_at >= self.stable_after

    def on_stable(self) -> None:
        """The worker has stayed up for ``stable_after``: forget earlier quick deaths."""
        self.quick_deaths = 0


# How long a worker may take to exit after SIGTERM before it is killed, when the caller gives
# no longer graceful timeout; drained workers have nothing left to finish.
MIN_TERM_WAIT = 5.0


def term_wait(deadline: float, now: float, graceful_timeout: float) -> float:
    """Seconds between SIGTERM and SIGKILL: what is left until ``deadline``, but at least
    ``min(MIN_TERM_WAIT, graceful_timeout)`` so a worker always gets a chance to exit cleanly.
    The one place this formula is written (stop, scale down, reload, recycle)."""
    return max(deadline - now, min(MIN_TERM_WAIT, graceful_timeout))
