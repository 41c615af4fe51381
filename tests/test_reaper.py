"""The reaper's decisions on process snapshots (pure), and the two kernel facts it relies on:
a subreaper gets its orphans back, and reaping orphans one pid at a time leaves a worker's exit
status to the event loop (real processes, no fleet)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hypothesis import given
from hypothesis import strategies as st

from fleet.supervisor.reaper import Proc, plan

MASTER = Proc(pid=100, ppid=1, pgid=90, sid=80, zombie=False)
WATCHDOG = Proc(pid=101, ppid=100, pgid=101, sid=101, zombie=False)
W0 = Proc(pid=200, ppid=100, pgid=200, sid=200, zombie=False)
W1 = Proc(pid=300, ppid=100, pgid=300, sid=300, zombie=False)
WORKERS = {200: 200, 300: 300}


def decide(*procs: Proc, known: dict[int, int | None] | None = None, spawning: bool = False):
    return plan([WATCHDOG, W0, W1, *procs], MASTER, WORKERS, frozenset({101}), known or {}, spawning)


def test_a_child_in_its_workers_group_needs_nothing() -> None:
    child = Proc(201, 200, 200, 200, False)
    grandchild = Proc(202, 201, 200, 200, False)
    assert decide(child, grandchild).groups == {}


def test_a_setsid_descendant_of_a_worker_is_registered_as_that_workers() -> None:
    shell = Proc(301, 300, 300, 300, False)
    escaped = Proc(302, 301, 302, 302, False)
    below = Proc(303, 302, 302, 302, False)
    decided = decide(shell, escaped, below)
    assert decided.groups == {302: 300} and decided.first[302].pid == 302
    assert decide(shell, escaped, known={302: 300}).groups == {}  # registered once


def test_an_orphan_that_kept_its_workers_session_belongs_to_that_worker() -> None:
    orphan = Proc(204, 100, 204, 200, False)  # setpgid only, then its parent died
    assert decide(orphan).groups == {204: 200}


def test_an_orphan_of_unknown_origin_waits_for_fleet_to_stop() -> None:
    orphan = Proc(400, 100, 400, 400, False)  # setsid, then its parent died before a scan
    assert decide(orphan).groups == {400: None}


def test_zombie_orphans_are_reaped_but_never_a_workers_or_the_watchdogs() -> None:
    dead_orphan = Proc(400, 100, -1, -1, True)
    dead_worker = Proc(200, 100, -1, -1, True)
    dead_watchdog = Proc(101, 100, -1, -1, True)
    decided = plan([dead_worker, dead_watchdog, dead_orphan, W1], MASTER, WORKERS, frozenset({101}), {}, False)
    assert decided.reap == (400,)
    dead_grandchild = Proc(305, 301, -1, -1, True)  # its parent, not fleet, reaps it
    assert decide(dead_grandchild).reap == ()


def test_while_spawning_an_unknown_child_of_the_master_is_left_alone() -> None:
    # It may be the worker being spawned, not declared yet: reaping it would steal its status.
    newborn = Proc(500, 100, 500, 500, False)
    dead_newborn = Proc(501, 100, -1, -1, True)
    decided = decide(newborn, dead_newborn, spawning=True)
    assert decided.reap == () and decided.groups == {}


def test_the_masters_own_group_and_session_are_never_registered() -> None:
    # A child the master started without a session of its own: killing its group kills fleet.
    same_group = Proc(600, 100, 90, 80, False)
    assert decide(same_group).groups == {}


def test_below_the_watchdog_is_not_fleets_business() -> None:
    assert decide(Proc(102, 101, 102, 102, False)).groups == {}


_pids = st.integers(102, 140)


@given(st.lists(st.tuples(_pids, st.sampled_from([100, 101, 200, 300, *range(102, 141)]),
                          st.sampled_from([90, 101, 200, 300, *range(102, 141)]), st.booleans()),
                unique_by=lambda t: t[0], max_size=25), st.booleans())
def test_never_reaps_or_registers_what_fleet_must_not_touch(rows, spawning) -> None:
    procs = [Proc(pid, ppid, pgid, pgid, zombie) for pid, ppid, pgid, zombie in rows]
    decided = plan([WATCHDOG, W0, W1, *procs], MASTER, WORKERS, frozenset({101}), {}, spawning)
    assert not set(decided.reap) & {200, 300, 101}
    assert all(next(p for p in procs if p.pid == pid).ppid == 100 for pid in decided.reap)
    assert not set(decided.groups) & {0, 1, 90, 80, 100, 200, 300}
    if spawning:
        assert decided.reap == ()


SUBREAPER_SCRIPT = textwrap.dedent("""
    import asyncio, os, subprocess, time
    import uvloop
    from fleet.supervisor.reaper import Reaper, snapshot

    reaper = Reaper(lambda pgid: None, lambda pgid: None, lambda message: None, str)
    assert reaper.subreaper

    async def main():
        # A "worker" the loop waits for; forked first, so a waitpid(-1) would find it first.
        with reaper.spawning():
            worker = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.3; exit 7",
                                                          start_new_session=True)
            reaper.own(worker.pid, worker.pid)
        # An orphan: the shell exits at once, its setsid'd child comes back to us (subreaper).
        subprocess.run(["sh", "-c", "setsid sleep 0.2 </dev/null >/dev/null 2>&1 &"], check=True)
        time.sleep(0.8)  # the loop is blocked: both are zombies now, neither reaped yet
        master, procs = snapshot(os.getpid())
        print("zombies", sorted(p.pid == worker.pid for p in procs if p.zombie and p.ppid == os.getpid()))
        reaper.scan_now()
        done, _ = await asyncio.wait({asyncio.ensure_future(worker.wait())}, timeout=5)
        print("exit", done.pop().result() if done else None)
        master, procs = snapshot(os.getpid())
        print("left", [(p.pid, p.zombie) for p in procs])

    uvloop.run(main())
""")


def test_subreaper_gets_its_orphans_back_and_reaping_them_leaves_worker_exit_codes_alone() -> None:
    result = subprocess.run([sys.executable, "-c", SUBREAPER_SCRIPT], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["zombies"] == "[False, True]"  # the orphan came back to us, next to the worker
    assert lines["exit"] == "7"  # the loop still got the worker's status (no waitpid(-1))
    assert lines["left"] == "[]"  # the orphan's zombie was reaped
