"""Generations, port blocks, the reload plan and recycling decisions: pure logic, no processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.config import Config, ConfigError, build_config, default_surge_base
from fleet.supervisor.generations import (
    port_list,
    RELOAD_LIFECYCLE,
    RELOAD_TRANSITIONS,
    InvalidReloadStep,
    Placement,
    RecycleLimits,
    RecycleReason,
    ReloadPhase,
    ReloadPlan,
    parse_worker_id,
    recycle_reason,
    request_limit,
    slot_label,
    worker_id,
)
from fleet.supervisor.policy import term_wait

P = ReloadPhase


def test_worker_ids_have_one_format_without_a_dot_and_parse_back() -> None:
    assert worker_id(3, 1) == "g3w1" == Config(app="x").worker_id(1, 3)
    assert "." not in worker_id(12, 40)
    assert parse_worker_id("g3w1") == (3, 1)
    for bad in ("w1", "g0w1", "g3w", "g3w1.x", "G3W1", ""):
        assert parse_worker_id(bad) is None


@given(st.integers(1, 10**6), st.integers(0, 10**4))
def test_worker_id_round_trips(generation: int, index: int) -> None:
    assert parse_worker_id(worker_id(generation, index)) == (generation, index)


def test_slot_labels_name_the_port_block() -> None:
    assert [slot_label(0, 0), slot_label(0, 2), slot_label(1, 0)] == ["w0", "w2", "s0"]


def test_a_reload_places_each_index_in_the_other_block_in_batches() -> None:
    plan = ReloadPlan(2, {0: 0, 1: 0, 2: 1}, batch_size=2)
    assert plan.placements == [Placement(0, 1), Placement(1, 1), Placement(2, 0)]
    assert plan.begin() is P.STARTING
    assert plan.next_batch() == [Placement(0, 1), Placement(1, 1)]
    assert plan.batch_ready([0, 1]) is P.STARTING
    assert plan.next_batch() == [Placement(2, 0)]
    assert plan.batch_ready([2]) is P.SWITCHED
    assert plan.next_batch() is None
    with pytest.raises(InvalidReloadStep):
        ReloadPlan(3, {0: 0}, batch_size=1).next_batch()  # not begun


def test_an_older_drain_on_the_target_ports_is_ended_first() -> None:
    plan = ReloadPlan(3, {0: 1, 1: 1}, batch_size=1, draining_ports=frozenset({(0, 0), (1, 0), (5, 1)}))
    assert plan.blocking_drains() == [(0, 0), (1, 0)]
    assert plan.begin() is P.ENDING_OLD_DRAIN
    plan.old_drain_ended()
    assert plan.phase is P.STARTING


def test_a_failed_batch_rolls_back_and_fails() -> None:
    plan = ReloadPlan(2, {0: 0, 1: 0}, batch_size=1)
    plan.begin()
    plan.next_batch()
    plan.batch_ready([0])
    plan.next_batch()
    plan.batch_failed("g2w1 failed to start: the app cannot boot")
    assert plan.phase is P.ROLLING_BACK
    plan.rolled_back()
    assert plan.phase is P.FAILED and "cannot boot" in (plan.failure or "")
    with pytest.raises(InvalidReloadStep):
        plan.batch_ready([1])


def test_reload_table_has_every_phase_and_final_phases_lead_nowhere() -> None:
    assert set(RELOAD_TRANSITIONS) == set(ReloadPhase)
    assert RELOAD_TRANSITIONS[P.SWITCHED] == RELOAD_TRANSITIONS[P.FAILED] == frozenset()
    # Every phase is reachable from PLANNED.
    seen, todo = {P.PLANNED}, [P.PLANNED]
    while todo:
        for nxt in RELOAD_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(ReloadPhase)


def test_a_port_check_failure_before_any_start_fails_the_plan() -> None:
    plan = ReloadPlan(2, {0: 0}, batch_size=1)
    plan.fail_before_start("port in use")
    assert plan.phase is P.FAILED


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReloadPlan(2, {0: 0}, batch_size=0)


def test_recycle_reasons_in_order_hard_memory_first() -> None:
    limits = RecycleLimits(max_requests=100, max_age=60, max_memory=100, max_memory_hard=200)
    assert recycle_reason(limits, requests=500, ready_for=600, rss=300) is RecycleReason.MAX_MEMORY_HARD
    assert recycle_reason(limits, requests=500, ready_for=600, rss=150) is RecycleReason.MAX_MEMORY
    assert recycle_reason(limits, requests=100, ready_for=600, rss=None) is RecycleReason.MAX_REQUESTS
    assert recycle_reason(limits, requests=99, ready_for=60, rss=50) is RecycleReason.MAX_AGE
    assert recycle_reason(limits, requests=99, ready_for=59, rss=50) is None
    assert recycle_reason(RecycleLimits(), requests=10**9, ready_for=10**9, rss=10**12) is None


def test_only_hard_memory_and_hung_workers_are_killed_without_a_drain() -> None:
    assert {r for r in RecycleReason if not r.graceful} == {RecycleReason.MAX_MEMORY_HARD, RecycleReason.HUNG}


@given(st.integers(1, 10**6), st.integers(0, 1000), st.integers(0, 2**31))
def test_request_limit_adds_at_most_the_jitter(limit: int, jitter: int, draw: int) -> None:
    assert limit <= request_limit(limit, jitter, draw) <= limit + jitter
    assert request_limit(0, jitter, draw) == 0


def test_term_wait_is_what_is_left_but_never_less_than_a_short_grace() -> None:
    assert term_wait(deadline=130.0, now=100.0, graceful_timeout=30) == 30.0
    assert term_wait(deadline=100.0, now=120.0, graceful_timeout=30) == 5.0
    assert term_wait(deadline=100.0, now=120.0, graceful_timeout=2) == 2.0


# -- the port blocks in the config ---------------------------------------------------------------

def up_config(**cli: str) -> Config:
    return build_config(cli, {}, {}, command="up", app="app.py")


def test_default_surge_block_overlaps_neither_the_base_block_nor_the_proxy_port() -> None:
    config = up_config(workers="3")
    assert config.surge_base() == 5200
    assert default_surge_base(5100, 3, 5201) == 5202  # moved past --port
    assert default_surge_base(65400, 100, 5006) == 65300  # no room above: below the base block
    assert up_config(workers="4", port="5201").surge_base() == 5202


@given(st.integers(1024, 65000), st.integers(1, 300), st.integers(1, 65535))
def test_default_surge_block_never_overlaps(base: int, workers: int, port: int) -> None:
    if base + workers - 1 > 65535 or base <= port < base + workers:
        return
    surge = default_surge_base(base, workers, port)
    block = range(surge, surge + workers)
    assert not set(block) & set(range(base, base + workers))
    assert port not in block


@pytest.mark.parametrize("options, message", [
    ({"workers": "3", "surge_base_port": "5101"}, "overlaps the --base-port block 5100-5102"),
    ({"workers": "3", "surge_base_port": "5005"}, "--port 5006 falls inside the surge block 5005-5007"),
    ({"workers": "3", "surge_base_port": "65534"}, "past 65535"),
    ({"max_requests": "10", "no_proxy": "true"}, "--max-requests needs the built-in proxy"),
    ({"max_requests_jitter": "10"}, "--max-requests-jitter needs --max-requests"),
    ({"max_memory": "100MiB", "max_memory_hard": "50MiB"}, "--max-memory-hard must be larger"),
    ({"reload_batch": "0"}, "--reload-batch"),
    ({"max_requests": "-1"}, "--max-requests"),
])
def test_bad_generation_options_are_clear_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        up_config(**options)


def test_no_proxy_ignores_the_surge_block() -> None:
    assert up_config(workers="3", surge_base_port="5101", no_proxy="true").no_proxy


def test_the_reload_table_is_a_state_table_walked_pair_by_pair() -> None:
    for current, target, allowed in RELOAD_LIFECYCLE.walk():
        assert allowed == (target in RELOAD_TRANSITIONS[current])
        if not allowed:
            with pytest.raises(InvalidReloadStep, match=f"reload cannot go from {current.value} to {target.value}"):
                RELOAD_LIFECYCLE.move(current, target)
    # The one same-state move: a batch is ready and the next one starts.
    assert [s for s in ReloadPhase if RELOAD_LIFECYCLE.allows(s, s)] == [P.STARTING]


def test_a_recycle_is_a_one_worker_plan_that_ends_an_older_drain_on_its_port_first() -> None:
    plan = ReloadPlan.one_worker(7, 2, 0, draining_ports=frozenset({(2, 1), (0, 1)}))
    assert plan.placements == [Placement(2, 1)] and plan.blocking_drains() == [(2, 1)]
    assert plan.begin() is P.ENDING_OLD_DRAIN
    plan.old_drain_ended()
    assert plan.next_batch() == [Placement(2, 1)]
    assert plan.batch_ready([2]) is P.SWITCHED


def test_port_lists_name_a_run_as_a_range() -> None:
    assert port_list([5103, 5101, 5102]) == "5101-5103"
    assert port_list([5101]) == "5101" and port_list([5201, 5101]) == "5101, 5201"
