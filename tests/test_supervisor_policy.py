"""The worker lifecycle table and the restart policy, without processes or clocks."""

from __future__ import annotations

import itertools

import pytest

from fleet.supervisor.policy import (
    BOOT_ERROR,
    TRANSITIONS,
    WORKER_LIFECYCLE,
    InvalidTransition,
    RestartPolicy,
    WorkerState,
    transition,
)

S = WorkerState

EXPECTED = {
    (S.STARTING, S.READY), (S.STARTING, S.STOPPING), (S.STARTING, S.EXITED),
    (S.READY, S.DRAINING), (S.READY, S.STOPPING), (S.READY, S.EXITED),
    (S.DRAINING, S.STOPPING), (S.DRAINING, S.EXITED),
    (S.STOPPING, S.EXITED),
    (S.EXITED, S.STARTING), (S.EXITED, S.BACKOFF), (S.EXITED, S.FAILED), (S.EXITED, S.STOPPED),
    (S.BACKOFF, S.STARTING), (S.BACKOFF, S.STOPPED),
}


def test_every_pair_of_states_is_allowed_exactly_when_the_table_says_so() -> None:
    for current, new in itertools.product(WorkerState, repeat=2):
        if (current, new) in EXPECTED:
            assert transition(current, new) is new
        else:
            with pytest.raises(InvalidTransition):
                transition(current, new)
    assert {(c, n) for c, targets in TRANSITIONS.items() for n in targets} == EXPECTED


def test_the_worker_table_is_a_state_table_with_no_same_state_move() -> None:
    assert {(c, n) for c, n, allowed in WORKER_LIFECYCLE.walk() if allowed} == EXPECTED
    assert WORKER_LIFECYCLE.final_states() == {S.FAILED, S.STOPPED}
    with pytest.raises(InvalidTransition, match="worker cannot go from ready to ready"):
        transition(S.READY, S.READY)


def test_final_states_and_reachability() -> None:
    assert TRANSITIONS[S.FAILED] == frozenset() and TRANSITIONS[S.STOPPED] == frozenset()
    reachable, frontier = {S.STARTING}, [S.STARTING]
    while frontier:
        for new in TRANSITIONS[frontier.pop()]:
            if new not in reachable:
                reachable.add(new)
                frontier.append(new)
    assert reachable == set(WorkerState)


def test_quick_deaths_back_off_doubling_from_0_1_to_a_30_second_cap() -> None:
    policy = RestartPolicy()
    delays = []
    now = 1000.0
    for _ in range(12):
        decision = policy.on_exit(now, now + 0.5, 1, ever_ready=True, starting_up=False)
        delays.append(decision.delay)
        now += 0.5 + decision.delay
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


def test_crash_loop_is_reported_after_three_quick_deaths_and_cleared_by_a_stable_run() -> None:
    policy = RestartPolicy()
    looping = [policy.on_exit(0.0, 1.0, 1, ever_ready=True, starting_up=False).crash_looping for _ in range(4)]
    assert looping == [False, False, True, True]
    # a worker that ran 10 s before dying was healthy: restart at once, not a loop any more
    decision = policy.on_exit(0.0, 10.0, -9, ever_ready=True, starting_up=False)
    assert (decision.delay, decision.crash_looping) == (0.1, False)
    policy.on_exit(0.0, 1.0, 1, ever_ready=True, starting_up=False)
    assert policy.quick_deaths == 1
    assert policy.is_stable(0.0, 5.0) and not policy.is_stable(0.0, 4.9)
    policy.on_stable()
    assert policy.quick_deaths == 0


def test_huge_number_of_quick_deaths_does_not_overflow() -> None:
    policy = RestartPolicy(quick_deaths=5000)
    assert policy.on_exit(0.0, 0.1, 1, ever_ready=True, starting_up=False).delay == 30.0


def test_boot_error_while_fleet_starts_gives_up_at_once() -> None:
    for code in (BOOT_ERROR, 126, 127):
        decision = RestartPolicy().on_exit(0.0, 0.5, code, ever_ready=False, starting_up=True)
        assert decision.give_up and str(code) in decision.reason


def test_boot_error_after_fleet_started_is_retried_with_backoff() -> None:
    # e.g. a deploy broke the app and a worker was restarted: keep the others, retry, report
    decision = RestartPolicy().on_exit(0.0, 0.5, BOOT_ERROR, ever_ready=True, starting_up=False)
    assert not decision.give_up and decision.delay == 0.1


def test_other_exit_before_ready_while_starting_gives_up_after_three_tries() -> None:
    policy = RestartPolicy()
    decisions = [policy.on_exit(0.0, 0.2, 1, ever_ready=False, starting_up=True) for _ in range(3)]
    assert [d.give_up for d in decisions] == [False, False, True]
    assert "3 times" in decisions[-1].reason
