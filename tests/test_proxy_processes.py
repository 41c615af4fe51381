"""--proxy-processes, the pure parts: the shared load table, fleet-wide least-connections,
counter snapshots added up across processes (and across a restart), the auto formula."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from fleet.balancer import snapshot
from fleet.balancer.loadtable import REUSE_AFTER, Columns, LoadTable, SharedProxyStats, SharedUpstreamSet
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.stats import ProxyStats
from fleet.config import ConfigError, build_config
from fleet.configgen.common import fleet_arguments
from fleet.cpulimit import auto_proxy_processes


@pytest.fixture
def table():
    table = LoadTable.create(rows=2)
    yield table
    table.close()


def test_each_process_writes_its_own_row_and_readers_sum_the_column(table: LoadTable) -> None:
    other = LoadTable.attach(os.dup(table.fd), rows=2)  # what a second proxy process maps
    try:
        first, second = SharedProxyStats(table, 0), SharedProxyStats(other, 1)
        first.columns["g1w0"] = second.columns["g1w0"] = 5
        a, b = first.upstream("g1w0"), second.upstream("g1w0")
        a.active_requests += 2
        b.active_requests += 1
        b.websockets += 1
        assert (a.active_requests, b.active_requests) == (2, 1)  # each its own count
        assert a.load == b.load == 4  # least-connections compares the fleet's
        assert a.fleet_active_requests == 3
        assert (table.active(5), table.websockets(5)) == (3, 1)
        table.zero_row(1)  # the master, after process 1 died
        assert a.load == 2 and b.active_requests == 0 and table.websockets(5) == 0
    finally:
        other.close()


def test_a_new_table_reads_zero(table: LoadTable) -> None:
    assert all(table.active(column) == 0 == table.websockets(column) for column in range(0, 1024, 97))


def test_choice_follows_the_fleet_wide_load(table: LoadTable) -> None:
    """Process 1 sees its own workers idle, but process 0 holds two requests on g1w0."""
    other = LoadTable.attach(os.dup(table.fd), rows=2)
    try:
        busy, mine = SharedProxyStats(table, 0), SharedProxyStats(other, 1)
        for index, stats in enumerate((busy, mine)):
            stats.columns.update({"g1w0": 0, "g1w1": 1})
        upstreams = SharedUpstreamSet(mine)
        upstreams.add("g1w0", "127.0.0.1", 1, ready=True)
        upstreams.add("g1w1", "127.0.0.1", 2, ready=True)
        busy.upstream("g1w0").active_requests = 2
        assert {upstreams.choose(0.0).id for _ in range(6)} == {"g1w1"}
        capped = SharedUpstreamSet(mine, worker_max_conns=2)
        capped.add("g1w0", "127.0.0.1", 1, ready=True)
        assert capped.choose(0.0) is None  # the cap counts the other process's requests
        assert capped.full(capped.get("g1w0"))  # type: ignore[arg-type]
    finally:
        other.close()


WORKER_STATE = st.tuples(st.integers(0, 4), st.integers(0, 2), st.booleans(), st.booleans(), st.booleans())


@given(st.lists(WORKER_STATE, min_size=0, max_size=5), st.integers(0, 3), st.integers(-1, 5), st.integers(1, 8))
def test_the_shared_choice_is_the_one_process_choice_on_the_same_counts(
        workers: list[tuple[int, int, bool, bool, bool]], cap: int, affinity: int, picks: int) -> None:
    """SharedUpstreamSet.choose mirrors UpstreamSet.choose: same counts, same answers."""
    table = LoadTable.create(rows=1)
    try:
        shared_stats = SharedProxyStats(table, 0)
        plain, shared = UpstreamSet(ProxyStats(), cap), SharedUpstreamSet(shared_stats, cap)
        for index, (active, websockets, ready, draining, down) in enumerate(workers):
            shared_stats.columns[f"w{index}"] = index
            for upstreams in (plain, shared):
                upstream = upstreams.add(f"w{index}", "127.0.0.1", 1000 + index, ready=ready)
                upstream.draining = draining
                upstream.down_until = 5.0 if down else 0.0
                upstream.stats.active_requests, upstream.stats.websockets = active, websockets
        wanted = f"w{affinity}" if affinity >= 0 else None
        for _ in range(picks):
            a, b = plain.choose(1.0, wanted), shared.choose(1.0, wanted)
            assert (a and a.id) == (b and b.id)
            if a is not None and b is not None:
                a.stats.active_requests += 1
                b.stats.active_requests += 1
    finally:
        table.close()


SPLIT_STATE = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2), st.booleans(),
                        st.booleans())


@given(st.lists(SPLIT_STATE, min_size=0, max_size=5), st.integers(0, 5), st.integers(-1, 5), st.integers(1, 8))
def test_the_shared_choice_over_two_rows_is_the_one_process_choice_on_the_summed_counts(
        workers: list[tuple[int, int, int, int, bool, bool]], cap: int, affinity: int, picks: int) -> None:
    """Counts split between this process's row and another's: the choice is the one a single
    process makes holding them all (what the inlined column sums in choose must keep)."""
    table = LoadTable.create(rows=2)
    other = LoadTable.attach(os.dup(table.fd), rows=2)
    try:
        mine, theirs = SharedProxyStats(table, 1), SharedProxyStats(other, 0)
        plain, shared = UpstreamSet(ProxyStats(), cap), SharedUpstreamSet(mine, cap)
        for index, (active, active_there, websockets, websockets_there, ready, draining) in enumerate(workers):
            mine.columns[f"w{index}"] = theirs.columns[f"w{index}"] = 3 * index + 1
            for upstreams in (plain, shared):
                upstream = upstreams.add(f"w{index}", "127.0.0.1", 1000 + index, ready=ready)
                upstream.draining = draining
            plain.get(f"w{index}").stats.active_requests = active + active_there  # type: ignore[union-attr]
            plain.get(f"w{index}").stats.websockets = websockets + websockets_there  # type: ignore[union-attr]
            shared.get(f"w{index}").stats.active_requests = active  # type: ignore[union-attr]
            shared.get(f"w{index}").stats.websockets = websockets  # type: ignore[union-attr]
            there = theirs.upstream(f"w{index}")
            there.active_requests, there.websockets = active_there, websockets_there
        wanted = f"w{affinity}" if affinity >= 0 else None
        for _ in range(picks):
            a, b = plain.choose(1.0, wanted), shared.choose(1.0, wanted)
            assert (a and a.id) == (b and b.id)
            if a is not None and b is not None:
                assert b.stats.load == a.stats.load  # type: ignore[attr-defined]
                a.stats.active_requests += 1
                b.stats.active_requests += 1
    finally:
        other.close()
        table.close()


def test_an_unannounced_worker_is_counted_privately(table: LoadTable) -> None:
    stats = SharedProxyStats(table, 0)
    upstream = stats.upstream("b9")
    upstream.active_requests += 1
    assert upstream.load == 1 and table.active(0) == 0


def test_columns_are_reused_only_when_long_gone_and_idle() -> None:
    busy: set[int] = set()
    columns = Columns(lambda column: column in busy, count=2)
    assert columns.assign("a", 0.0) == 0 and columns.assign("b", 0.0) == 1
    assert columns.assign("a", 1.0) == 0  # the same id keeps its column
    columns.release("a", 10.0)
    with pytest.raises(RuntimeError):
        columns.assign("c", 10.0 + REUSE_AFTER - 1)  # late decrements may still land in it
    busy.add(0)
    with pytest.raises(RuntimeError):
        columns.assign("c", 10.0 + REUSE_AFTER)  # a request still counted there
    busy.clear()
    assert columns.assign("c", 10.0 + REUSE_AFTER) == 0


def _stats(requests: int, errors: int = 0, queued: int = 0) -> ProxyStats:
    stats = ProxyStats()
    upstream = stats.upstream("g1w0")
    for _ in range(requests):
        upstream.record_response("GET", 200, 0.002)
    stats.retries = errors
    stats.client_error("bad_request") if errors else None
    stats.queued = queued
    stats.bytes_sent = 100 * requests
    return stats


def test_snapshots_add_up_and_fill_the_master_stats() -> None:
    total = snapshot.add(snapshot.add(snapshot.empty(), snapshot.snapshot(_stats(3, 1, 2))),
                         snapshot.snapshot(_stats(4)))
    shown = ProxyStats()
    snapshot.fill(shown, total, {"g1w0": (5, 1), "g2w0": (0, 0)})
    upstream = shown.upstreams["g1w0"]
    assert upstream.requests == {("GET", 200): 7} and upstream.requests_total == 7
    assert sum(upstream.duration_counts) == 7
    assert (upstream.active_requests, upstream.websockets) == (5, 1)
    assert shown.upstreams["g2w0"].requests_total == 0
    assert (shown.retries, shown.client_errors, shown.queued, shown.bytes_sent) == (1, {"bad_request": 1}, 2, 700)


def test_a_dead_process_is_folded_without_its_queue_and_a_removed_worker_is_forgotten() -> None:
    base = snapshot.add(snapshot.empty(), snapshot.snapshot(_stats(3, queued=4)), with_gauges=False)
    assert base["queued"] == 0 and base["upstreams"]["g1w0"]["requests"] == [["GET", 200, 3]]
    snapshot.forget(base, "g1w0")
    assert base["upstreams"] == {}


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=12))
def test_counters_never_go_back_across_restarts(events: list[tuple[int, bool]]) -> None:
    """Each event: the live process relays some requests, then maybe dies (its last snapshot
    is folded into the base, a new process starts at zero). The shown total never decreases."""
    base = snapshot.empty()
    live = 0
    shown_before = 0
    for more, dies in events:
        live += more
        current = snapshot.snapshot(_stats(live))
        shown = snapshot.add(base, current)["upstreams"].get("g1w0", {"requests": []})
        shown_total = sum(n for _, _, n in shown["requests"])
        assert shown_total >= shown_before
        shown_before = shown_total
        if dies:
            base = snapshot.add(base, current, with_gauges=False)
            live = 0


@pytest.mark.parametrize(("usable", "command", "expected"), [
    (1, "up", 1), (2, "up", 1), (7, "up", 1), (8, "up", 2), (16, "up", 4), (256, "up", 16),
    (1, "balance", 1), (2, "balance", 2), (12, "balance", 12), (64, "balance", 16),
])
def test_auto_formula(usable: int, command: str, expected: int) -> None:
    assert auto_proxy_processes(usable, command) == expected


def test_option_parses_n_and_auto_and_rejects_the_rest() -> None:
    assert build_config({"proxy_processes": "3"}, {}, {}, command="balance").proxy_processes == 3
    assert build_config({}, {"FLEET_PROXY_PROCESSES": "auto"}, {}, command="balance").proxy_processes == 0
    assert build_config({}, {}, {}, command="balance").proxy_processes == 1
    for bad in ("0", "65", "many", "-1"):
        with pytest.raises(ConfigError, match="--proxy-processes"):
            build_config({"proxy_processes": bad}, {}, {}, command="balance")
    with pytest.raises(ConfigError, match="--proxy-processes needs the built-in proxy"):
        build_config({"proxy_processes": "2", "no_proxy": True}, {}, {}, command="up", app="app.py")


def test_generated_command_lines_keep_auto() -> None:
    config = build_config({"proxy_processes": "auto"}, {}, {}, command="up", app="app.py")
    args = fleet_arguments(config)
    assert args[args.index("--proxy-processes") + 1] == "auto"


def test_every_proxy_state_move_is_in_the_table_or_raises() -> None:
    from fleet.balancer.proxystate import TABLE, TRANSITIONS, InvalidProxyTransition, ProxyState, transition

    assert set(TRANSITIONS) == set(ProxyState)
    walked = 0
    for current, new, allowed in TABLE.walk():
        walked += 1
        if allowed:
            assert transition(current, new) is new
        else:
            with pytest.raises(InvalidProxyTransition, match=f"from {current.value} to {new.value}"):
                transition(current, new)
    assert walked == len(ProxyState) ** 2
    # The same-state moves proxylives makes, and only those: a slot's first launch (made
    # STARTING) and a replacement that binds after stop_accepting (already STOPPING).
    assert {s for s in ProxyState if TABLE.allows(s, s)} == {ProxyState.STARTING, ProxyState.STOPPING}
    assert TABLE.final_states() == {ProxyState.STOPPED}
    # Every state but STOPPED can reach STOPPED, and a dead process always comes back.
    assert all(ProxyState.STOPPED in TRANSITIONS[s] for s in ProxyState if s is not ProxyState.STOPPED)
    assert ProxyState.STARTING in TRANSITIONS[ProxyState.RESTARTING]


def test_a_forgotten_workers_column_views_do_not_pile_up(table: LoadTable) -> None:
    """Workers come and go for as long as the fleet runs (reloads, --max-requests): the table
    keeps no view of a worker whose stats are gone, and closes with live ones outstanding."""
    stats = SharedProxyStats(table, 0)
    for generation in range(200):
        stats.columns[f"g{generation}w0"] = generation % 4
        assert stats.upstream(f"g{generation}w0").load == 0
        stats.upstreams.pop(f"g{generation}w0")  # as ProxyProcess does on "remove"
    assert len([ref for ref in table._columns if ref() is not None]) == 0
    assert len(table._columns) <= 2
    stats.columns["kept"] = 1
    kept = stats.upstream("kept")
    kept.active_requests += 1
    assert table.active(1) == 1 and kept.load == 1  # table.close() (the fixture) releases its views
