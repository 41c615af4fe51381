"""A worker's intent and which map holds it, the events the supervisor announces, generation
numbers and the one output-line splitter: pure bookkeeping, no processes."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from fleet.statetable import InvalidTransition
from fleet.supervisor.generations import GenerationNumbers, Placement, scale_placements
from fleet.supervisor.info import WorkerChange, WorkerInfo
from fleet.supervisor.policy import WorkerState
from fleet.supervisor.process import relay_lines
from fleet.supervisor.worker import INTENTS, MEMBERSHIP, Intent, Membership, Roster, Worker

I, M, S = Intent, Membership, WorkerState

EXPECTED_INTENTS = {
    (I.RUN, I.RESTART), (I.RUN, I.STOP),
    (I.RESTART, I.RUN), (I.RESTART, I.RESTART), (I.RESTART, I.STOP),
    (I.STOP, I.STOP),
}
EXPECTED_MEMBERSHIP = {
    (M.NEW, M.PENDING), (M.PENDING, M.CURRENT), (M.PENDING, M.REPLACED),
    (M.CURRENT, M.REPLACED), (M.REPLACED, M.GONE),
}


@pytest.mark.parametrize("table, expected", [(INTENTS, EXPECTED_INTENTS), (MEMBERSHIP, EXPECTED_MEMBERSHIP)])
def test_every_move_of_intent_and_membership_is_allowed_exactly_when_the_table_says_so(table, expected) -> None:
    for current, target, allowed in table.walk():
        assert allowed == ((current, target) in expected), (current, target)
        if allowed:
            assert table.move(current, target) is target
        else:
            with pytest.raises(InvalidTransition, match=f"{table.name} cannot go"):
                table.move(current, target)


def test_stop_and_gone_are_final_and_every_membership_is_reachable() -> None:
    assert INTENTS.targets(I.STOP) == {I.STOP}  # a stop is never taken back
    assert MEMBERSHIP.final_states() == {M.GONE}
    assert MEMBERSHIP.reachable(M.NEW) == set(Membership)


def _worker(index: int, generation: int = 1, block: int = 0) -> Worker:
    return Worker(index=index, generation=generation, block=block, port=5100 + index + 100 * block)


def test_a_replacement_serves_and_the_old_worker_moves_to_replaced_then_is_forgotten() -> None:
    roster = Roster()
    old, new = _worker(0), _worker(0, generation=2, block=1)
    roster.add(old)
    assert roster.serve(old) is None and roster.current == {0: old} and not roster.pending
    roster.add(new)
    assert roster.pending == {"g2w0": new} and roster.all() == [old, new]
    assert roster.serve(new) is old
    assert roster.current == {0: new} and roster.replaced == {"g1w0": old} and not roster.pending
    assert (old.membership, new.membership) == (M.REPLACED, M.CURRENT)
    assert roster.held_ports() == {(0, 0)} and not roster.is_current(old)
    roster.retire(old)  # a drain cut short marks it again: no move, still listed
    assert roster.replaced == {"g1w0": old}
    roster.forget(old)
    roster.forget(old)  # two stops raced: nothing left to forget
    assert old.membership is M.GONE and roster.all() == [new]
    with pytest.raises(InvalidTransition):
        roster.add(old)  # a forgotten worker never comes back


def test_a_failed_new_worker_leaves_pending_for_replaced_and_a_scaled_away_one_leaves_current() -> None:
    roster = Roster()
    serving, trial = _worker(0), _worker(1)
    roster.add(serving)
    roster.serve(serving)
    roster.add(trial)
    roster.retire(trial)
    roster.retire(serving)
    assert not roster.current and not roster.pending and set(roster.replaced) == {"g1w0", "g1w1"}
    assert len(roster.all()) == 2  # each listed once
    with pytest.raises(InvalidTransition):
        roster.serve(trial)


def test_intent_moves_go_through_the_table() -> None:
    worker = _worker(0)
    worker.intend(I.RESTART)
    worker.intend(I.RESTART)
    worker.intend(I.RUN)
    with pytest.raises(InvalidTransition, match="worker intent cannot go from run to run"):
        worker.intend(I.RUN)
    worker.intend(I.STOP)
    with pytest.raises(InvalidTransition):
        worker.intend(I.RESTART)
    assert worker.intent is I.STOP


def _info(state: str, **extra: object) -> WorkerInfo:
    fields: dict[str, object] = dict(index=0, id="g1w0", port=5100, pid=7, state=state, started_at=None,
                                     restarts=0, crash_looping=False, last_exit=None)
    fields.update(extra)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


def test_worker_info_carries_the_enum_and_prints_the_old_strings() -> None:
    info = _info("draining")
    assert info.state is S.DRAINING and not info.ready and _info(S.READY).ready
    assert json.dumps({"state": info.state}) == '{"state": "draining"}'
    assert f"{info.state}" == "draining" and info.state.value == "draining"
    with pytest.raises(ValueError):
        _info("sleeping")


def test_a_change_says_what_a_worker_entered() -> None:
    starting, ready = _info("starting"), _info("ready")
    assert WorkerChange(starting, ready).entered(S.READY)
    assert WorkerChange(None, ready).entered(S.READY)
    assert not WorkerChange(ready, ready).entered(S.READY)  # the same state, say a new pid
    looping = _info("backoff", crash_looping=True)
    assert WorkerChange(_info("exited"), looping).started_crash_looping
    assert not WorkerChange(looping, _info("starting", crash_looping=True)).started_crash_looping


def test_generation_numbers_are_handed_out_once_and_in_order() -> None:
    numbers = GenerationNumbers()
    assert (numbers.last, numbers.upcoming) == (0, 1)
    assert numbers.take() == 1 and numbers.upcoming == 2
    assert numbers.upcoming == 2  # looking does not use it (a reload refused for a taken port)
    assert numbers.take(2) == 2
    with pytest.raises(ValueError, match="generation 2 is not the next one"):
        numbers.take(2)
    with pytest.raises(ValueError):
        numbers.take(5)
    assert numbers.last == 2


def test_scale_up_places_new_indices_in_the_serving_block_unless_a_drain_holds_the_port() -> None:
    assert scale_placements({0: 1, 1: 1}, frozenset(), 4) == [Placement(2, 1), Placement(3, 1)]
    assert scale_placements({0: 0}, frozenset({(1, 0)}), 3) == [Placement(1, 1), Placement(2, 0)]
    assert scale_placements({}, frozenset(), 2) == [Placement(0, 0), Placement(1, 0)]
    assert scale_placements({0: 0, 1: 0}, frozenset(), 2) == []


def _split(chunks: list[bytes], max_line: int) -> list[bytes]:
    async def run() -> list[bytes]:
        stream = asyncio.StreamReader()
        lines: list[bytes] = []
        reader = asyncio.ensure_future(relay_lines(stream, lines.append, max_line))
        for chunk in chunks:  # one read per chunk, as from a pipe written in pieces
            stream.feed_data(chunk)
            for _ in range(3):
                await asyncio.sleep(0)
        stream.feed_eof()
        await reader
        return lines

    return asyncio.run(run())


def test_the_line_splitter_keeps_lines_across_chunks_and_cuts_endless_ones() -> None:
    assert _split([b"a\nb", b"c\n", b"tail"], 64) == [b"a", b"bc", b"tail"]
    assert _split([b"x" * 10, b"x" * 10, b"\nok\n"], 15) == [b"x" * 20, b"", b"ok"]  # cut at 20 > 15
    assert _split([b""], 8) == []
    # Whatever the chunking, the bytes come out in order and no piece exceeds the bound much.
    data = b"".join(bytes([65 + i % 26]) * (i % 7) + b"\n" * (i % 3 == 0) for i in range(200))
    for size in (1, 3, 64, 65536):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        lines = _split(chunks, 5)
        assert b"".join(lines) == data.replace(b"\n", b"")
        assert all(len(line) <= 5 + size for line in lines)


def test_worker_lifecycle_states_and_pairs_are_covered_by_some_table() -> None:
    # Sanity for the walk above: the enums the tables were built from are exactly these.
    assert set(INTENTS.states) == set(Intent) and set(MEMBERSHIP.states) == set(Membership)
    assert len(list(itertools.product(Intent, Intent))) == len(list(INTENTS.walk()))
