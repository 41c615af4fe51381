"""The pure parts of the balancer: least-connections choice, ties, passive health, cookies."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from fleet.balancer.policy import DOWN_SECONDS, UpstreamSet, affinity_from_cookie
from fleet.balancer.stats import ProxyStats


def make(count: int, ready: bool = True) -> UpstreamSet:
    upstreams = UpstreamSet(ProxyStats())
    for index in range(count):
        upstreams.add(f"w{index}", "127.0.0.1", 5100 + index, ready=ready)
    return upstreams


def test_least_loaded_ready_worker_wins() -> None:
    upstreams = make(3)
    upstreams.get("w0").stats.active_requests = 2  # type: ignore[union-attr]
    upstreams.get("w1").stats.websockets = 1  # type: ignore[union-attr]
    assert all(upstreams.choose(0.0).id == "w2" for _ in range(10))  # type: ignore[union-attr]


def test_ties_rotate_over_every_worker() -> None:
    upstreams = make(3)
    picks = Counter(upstreams.choose(0.0).id for _ in range(300))  # type: ignore[union-attr]
    assert picks == {"w0": 100, "w1": 100, "w2": 100}


def test_only_ready_and_not_down_workers_are_chosen() -> None:
    upstreams = make(3)
    upstreams.set_ready("w0", False)
    upstreams.mark_down(upstreams.get("w1"), now=10.0)  # type: ignore[arg-type]
    assert {upstreams.choose(10.5).id for _ in range(10)} == {"w2"}  # type: ignore[union-attr]
    assert {upstreams.choose(10.0 + DOWN_SECONDS + 0.1).id for _ in range(10)} == {"w1", "w2"}  # type: ignore[union-attr]
    upstreams.mark_down(upstreams.get("w1"), now=20.0)  # type: ignore[arg-type]
    upstreams.set_ready("w1", True)  # the supervisor's probe clears passive health
    assert "w1" in {upstreams.choose(20.1).id for _ in range(10)}  # type: ignore[union-attr]


def test_none_ready_means_none() -> None:
    assert make(0).choose(0.0) is None
    assert make(2, ready=False).choose(0.0) is None
    upstreams = make(2)
    assert upstreams.choose(0.0, exclude=[upstreams.get("w0"), upstreams.get("w1")]) is None  # type: ignore[list-item]


def test_affinity_wins_while_its_worker_is_available() -> None:
    upstreams = make(3)
    upstreams.get("w2").stats.active_requests = 50  # type: ignore[union-attr]
    assert upstreams.choose(0.0, affinity="w2").id == "w2"  # type: ignore[union-attr]
    upstreams.set_ready("w2", False)
    assert upstreams.choose(0.0, affinity="w2").id in {"w0", "w1"}  # type: ignore[union-attr]
    assert upstreams.choose(0.0, affinity="w9").id in {"w0", "w1"}  # type: ignore[union-attr]


def test_removed_worker_is_never_chosen_and_stats_survive() -> None:
    stats = ProxyStats()
    upstreams = UpstreamSet(stats)
    upstreams.add("w0", "127.0.0.1", 5100, ready=True)
    upstreams.add("w1", "127.0.0.1", 5101, ready=True)
    upstreams.remove("w1")
    assert {upstreams.choose(0.0).id for _ in range(5)} == {"w0"}  # type: ignore[union-attr]
    assert "w1" in stats.upstreams and len(upstreams) == 1


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=8))
def test_choice_is_always_a_minimum_load(loads: list[int]) -> None:
    upstreams = make(len(loads))
    for index, load in enumerate(loads):
        upstreams.get(f"w{index}").stats.active_requests = load  # type: ignore[union-attr]
    chosen = upstreams.choose(0.0)
    assert chosen is not None and chosen.stats.active_requests == min(loads)


def test_affinity_cookie_parsing() -> None:
    assert affinity_from_cookie(b"fleet_affinity=w1") == "w1"
    assert affinity_from_cookie(b"a=b; fleet_affinity=w2; c=d") == "w2"
    assert affinity_from_cookie(b"fleet_affinity=w1; fleet_affinity=w3") == "w3"
    assert affinity_from_cookie(b"my_fleet_affinity=w1") is None
    assert affinity_from_cookie(b"session=1") is None
    assert affinity_from_cookie(b"fleet_affinity=") is None
    assert affinity_from_cookie(b"fleet_affinity=" + b"x" * 100) is None
