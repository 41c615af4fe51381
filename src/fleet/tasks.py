"""Timeouts and cancellation that cannot be lost: how fleet starts, bounds and stops tasks.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives while its inner
task is finishing (CPython gh-86296), and ``asyncio.timeout`` can leave a stray cancellation
behind when it expires just as its body completes. fleet's readiness probe is a polling loop:
one swallowed cancel and it polled on until ``--start-timeout`` while ``asyncio.Runner``
waited for it at shutdown (so ``fleet up`` stopped while starting once never exited).

So fleet never uses either. It waits with ``asyncio.wait``, which never swallows a
cancellation of its caller, and stops a task with ``cancel_and_wait``, which cancels again
until the task is done and gives up at a deadline instead of waiting for a task that does not
cooperate. ``run_loop`` runs a main coroutine the same way: nothing left behind at its end can
keep the process from exiting.

``supervise`` keeps a long-lived task of the master alive (the status page's sampler, the
systemd watchdog, the recycler, the proxy's sweep): an unexpected exception is logged once, as
one line, and the task starts again after a delay that doubles with each failure in a row
(``RestartBackoff``, pure and driven by a clock argument). Without it, one ``OSError(EMFILE)``
ended the sampler for good and ``/_fleet/status.json`` froze.

What this module is not: it knows nothing of workers or connections; it only starts, bounds
and ends coroutines.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Collection, Coroutine, TypeVar

T = TypeVar("T")

# How long a cancelled task may take to finish before it is cancelled again (a task may
# have swallowed the first cancel; one that is still cleaning up gets this much time).
RECANCEL_INTERVAL = 1.0
# How long the end of a loop waits for the tasks still running before it gives up on them.
SHUTDOWN_GRACE = 5.0


async def with_timeout(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds; ``TimeoutError`` past it.

    Unlike ``asyncio.wait_for`` on 3.11, a cancellation of the caller always propagates, and
    the inner task is ended (and waited for, bounded) on every way out.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        await cancel_and_wait([task])
        raise
    if not done:
        await cancel_and_wait([task])
        raise TimeoutError
    return task.result()


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds."""
    if event.is_set():
        return True
    try:
        await with_timeout(event.wait(), timeout)
    except TimeoutError:
        return event.is_set()
    return True


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]], timeout: float = SHUTDOWN_GRACE,
                          *, recancel: bool = True) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait until they are done; return those still running at the timeout.

    A task that swallowed its cancellation is cancelled again every ``RECANCEL_INTERVAL``
    (``recancel=False`` for a task whose own clean-up on cancel must not be interrupted; it
    is still waited for no longer than ``timeout``). If the caller is cancelled meanwhile,
    the tasks are still seen to the end (bounded) and then the caller's cancellation goes on.
    """
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout
    cancelled_by_caller = False
    first = True
    while pending:
        if first or recancel:
            for task in pending:
                task.cancel()
        first = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL, remaining))
        except asyncio.CancelledError:
            cancelled_by_caller = True
            pending = {task for task in pending if not task.done()}
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure at shutdown is not "never retrieved"
    if cancelled_by_caller:
        raise asyncio.CancelledError
    return pending


def describe(tasks: Collection[asyncio.Future[Any]]) -> str:
    """Where each task is stuck, for the message about tasks that would not end."""
    parts = []
    for task in tasks:
        where = "?"
        if isinstance(task, asyncio.Task):
            frames = task.get_stack(limit=1)
            if frames:
                code = frames[-1].f_code
                where = f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frames[-1].f_lineno})"
        parts.append(where)
    return ", ".join(sorted(parts))


def run_loop(main: Coroutine[Any, Any, T], loop_factory: Callable[[], asyncio.AbstractEventLoop],
             warn: Callable[[str], None] | None = None, grace: float = SHUTDOWN_GRACE) -> T:
    """Run ``main`` on a new loop, then end every task left (bounded) and close the loop.

    ``asyncio.Runner`` waits without a bound for the tasks left at the end; a task that does
    not end would keep the process alive forever. Here such a task is named and abandoned.
    """
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    try:
        main_task = loop.create_task(main)
        try:
            return loop.run_until_complete(main_task)
        except KeyboardInterrupt:
            # Before fleet's own signal handlers are installed (or after they are removed).
            loop.run_until_complete(cancel_and_wait([main_task]))
            raise
    finally:
        try:
            left = asyncio.all_tasks(loop)
            stuck = loop.run_until_complete(cancel_and_wait(left, grace)) if left else set()
            if stuck:
                (warn or _stderr)(f"{len(stuck)} task(s) did not end at shutdown, abandoned: {describe(stuck)}")
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@dataclass(frozen=True)
class RestartBackoff:
    """When a supervised task starts again: ``first`` seconds after its first failure, doubling
    with each failure in a row up to ``most``; a run that lasted ``stable`` seconds was healthy
    and starts the count again (a task that fails once a day never waits ``most``)."""

    first: float = 0.5
    most: float = 30.0
    stable: float = 60.0

    def failures_after(self, failures: int, ran_for: float) -> int:
        """The count of failures in a row, once a run of ``ran_for`` seconds has failed."""
        return 1 if ran_for >= self.stable else failures + 1

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next start, after ``failures`` (>= 1) in a row."""
        if failures <= 0:
            return 0.0
        return min(self.most, self.first * 2.0 ** min(failures - 1, 60))


RESTART_BACKOFF = RestartBackoff()


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback (one line for the log)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


async def supervise(name: str, start: Callable[[], Awaitable[Any]], log: Callable[[str], None], *,
                    policy: RestartBackoff = RESTART_BACKOFF, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Run ``start()`` until it returns; after an exception, log it (one line) and start it again
    after ``policy``'s delay. A cancellation ends it at once (it is how the master stops it)."""
    failures = 0
    while True:
        started = clock()
        try:
            await start()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: the task must not be lost
            failures = policy.failures_after(failures, clock() - started)
            delay = policy.delay(failures)
            log(f"{name} failed ({type(exc).__name__}: {exc} at {where(exc)}); "
                f"restarting it in {delay:.1f} s (failure {failures} in a row)")
            del exc
        await sleep(delay)


def _stderr(message: str) -> None:
    print(f"fleet | warning: {message}", file=sys.stderr, flush=True)


__all__ = ["RESTART_BACKOFF", "RestartBackoff", "cancel_and_wait", "describe", "run_loop", "supervise",
           "wait_event", "where", "with_timeout"]
