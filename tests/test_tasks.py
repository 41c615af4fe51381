"""``fleet.tasks``: a cancellation is never lost and a stop never waits for ever.

These are the properties the start-up hang lacked: ``asyncio.wait_for`` on 3.11
drops a cancel that arrives while its inner task is finishing, and ``asyncio.Runner`` waits
without bound for tasks that do not end. Real event loops, no mocks.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet.loop import new_loop
from fleet.tasks import cancel_and_wait, run_loop, wait_event, with_timeout


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_with_timeout_propagates_a_cancel_that_arrives_as_the_inner_work_finishes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inner: asyncio.Future[int] = loop.create_future()
        outer = asyncio.ensure_future(with_timeout(inner, 10))
        await asyncio.sleep(0)  # outer now waits on inner
        inner.set_result(1)  # its wake-up is scheduled ...
        outer.cancel()  # ... and the cancel lands in the same turn of the loop
        with pytest.raises(asyncio.CancelledError):
            await outer

    run(main())


def test_with_timeout_returns_the_result_or_raises_timeout_and_ends_the_inner_task() -> None:
    async def main() -> None:
        assert await with_timeout(asyncio.sleep(0, result="done"), 1) == "done"
        ended = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                ended.set()

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await with_timeout(slow(), 0.05)
        assert ended.is_set() and time.monotonic() - started < 2

    run(main())


def test_wait_event_true_when_set_false_at_timeout() -> None:
    async def main() -> None:
        event = asyncio.Event()
        assert await wait_event(event, 0.01) is False
        asyncio.get_running_loop().call_soon(event.set)
        assert await wait_event(event, 5) is True

    run(main())


def test_cancel_and_wait_cancels_again_a_task_that_swallowed_the_first_cancel() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # what asyncio.wait_for does by accident on 3.11
        await asyncio.sleep(30)
        return "never"

    async def main() -> None:
        task = asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], timeout=5) == set()
        assert task.cancelled()

    run(main())


def test_cancel_and_wait_gives_up_at_its_timeout_and_names_the_straggler() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def refuses() -> None:
            while not release.is_set():
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    continue

        task = asyncio.ensure_future(refuses())
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await cancel_and_wait([task], timeout=0.3) == {task}
        assert time.monotonic() - started < 2
        release.set()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.done()

    run(main())


def test_cancel_and_wait_without_recancel_lets_clean_up_finish() -> None:
    async def main() -> None:
        cleaned = []

        async def cleans_up() -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(1.3)  # longer than one re-cancel interval
                cleaned.append(True)
                raise

        task = asyncio.ensure_future(cleans_up())
        await asyncio.sleep(0)
        assert await cancel_and_wait([task], timeout=5, recancel=False) == set()
        assert cleaned == [True]

    run(main())


def test_run_loop_returns_although_a_task_refuses_to_end() -> None:
    warnings: list[str] = []

    async def main() -> int:
        async def refuses() -> None:
            while True:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    continue

        asyncio.ensure_future(refuses())
        await asyncio.sleep(0)
        return 7

    started = time.monotonic()
    assert run_loop(main(), new_loop, warn=warnings.append, grace=0.5) == 7
    assert time.monotonic() - started < 5
    assert len(warnings) == 1 and "refuses" in warnings[0]
