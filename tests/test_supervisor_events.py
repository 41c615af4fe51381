"""The supervisor announces every worker change as a (before, after) event, to each observer
in order: a real Supervisor running real worker processes, no proxy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fleet.config import build_config
from fleet.supervisor.info import WorkerChange
from fleet.supervisor.manager import Supervisor
from fleet.supervisor.policy import WorkerState
from fleet.supervisor.process import Output
from fleet.supervisor.settings import SupervisorViews
from fleet.supervisor.worker import Worker
from support import free_port_range

S = WorkerState
HTTP_SERVER = f"exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"


class _Quiet(Output):
    def write_line(self, text: str) -> None:
        pass


def test_each_change_carries_the_snapshot_announced_before_it_to_every_observer_in_order(tmp_path: Path) -> None:
    base = free_port_range(2)
    config = build_config({"cmd": HTTP_SERVER, "workers": "2", "base_port": str(base), "no_proxy": True,
                           "port": str(base + 2), "log_dir": str(tmp_path)}, {}, {})
    seen: list[tuple[str, WorkerChange]] = []

    async def scenario() -> tuple[int, int]:
        supervisor = Supervisor(SupervisorViews.of(config), None, output=_Quiet(),
                                observers=[lambda c: seen.append(("first", c))])
        supervisor.observe(lambda c: seen.append(("second", c)))
        try:
            await supervisor.start()
            generation = supervisor.generation
            await supervisor.reload()  # --no-proxy: each worker restarts on its port
            return generation, supervisor.generation
        finally:
            await supervisor.stop(5.0)

    generations = asyncio.run(scenario())
    assert generations == (1, 2)
    # Every change reached both observers, the first one first.
    assert [who for who, _ in seen] == ["first", "second"] * (len(seen) // 2)
    changes = [change for who, change in seen if who == "first"]
    assert [c for who, c in seen if who == "second"] == changes
    last: dict[int, object] = {}
    for change in changes:
        # No observer keeps snapshots: the event's before is exactly the last one announced.
        assert change.before == last.get(change.after.index)
        last[change.after.index] = change.after
    for index in (0, 1):
        states = [c.after.state for c in changes if c.after.index == index]
        moves = [s for a, s in zip([None, *states], states) if a is not s]
        assert moves == [S.STARTING, S.READY, S.STOPPING, S.EXITED, S.STARTING, S.READY,
                         S.STOPPING, S.EXITED, S.STOPPED], (index, moves)
        ids = [c.after.id for c in changes if c.after.index == index]
        assert ids[0] == f"g1w{index}" and ids[-1] == f"g2w{index}"


def test_an_observer_that_fails_neither_hides_the_change_from_the_next_nor_leaves_a_waiter_waiting() -> None:
    config = build_config({"cmd": HTTP_SERVER, "workers": "1", "no_proxy": True}, {}, {})
    seen: list[str] = []

    def broken(change: WorkerChange) -> None:
        raise ValueError("observer bug")

    async def scenario() -> bool:
        supervisor = Supervisor(SupervisorViews.of(config), None, output=_Quiet(), observers=[broken, lambda c: seen.append(c.after.id)])
        worker = Worker(index=0, generation=1, block=0, port=5100)  # a record only: no process
        waiting = asyncio.ensure_future(supervisor._wait_for(lambda: worker.state is S.EXITED, 5.0))
        await asyncio.sleep(0)
        try:
            supervisor._set_state(worker, S.EXITED)
        except ValueError:
            pass
        else:
            raise AssertionError("the observer's error was swallowed")
        return await waiting

    assert asyncio.run(scenario()) is True
    assert seen == ["g1w0"]
