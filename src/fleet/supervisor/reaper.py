"""Every descendant dies with fleet: find processes that left their worker's group, kill them with it.

A worker runs in its own process group, so ``killpg`` and the watchdog reach its children. A
child that calls ``setsid`` (or ``setpgid``) leaves that group: it used to survive ``fleet down``
and ``kill -9`` of the master. Two mechanisms close that gap:

- The master is a child subreaper (``PR_SET_CHILD_SUBREAPER``, Linux): an orphan below it is
  re-parented to the master instead of init, so fleet still sees it.
- ``Reaper.scan`` (about once a second) lists the master's descendants and registers every
  process group that is not a worker's own with the watchdog, so the group dies with the master
  even on ``kill -9``. A group found below a live worker (or in its session) belongs to that
  worker and is killed when the worker exits (``worker_exited``); an orphan whose worker is not
  known stays until fleet stops, then is killed after the workers (``kill_all``).

Orphans that exit become zombie children of the master. They are reaped one pid at a time with
``waitpid(pid, WNOHANG)``, and only pids that are not the master's own children: a
``waitpid(-1)`` would steal the exit status of a worker that the event loop is waiting for
(libuv and asyncio's child watchers both wait per pid; a stolen status means a worker's exit is
never reported). A child the master spawns on purpose must therefore be declared: ``own(pid)``,
and ``spawning()`` around the spawn (between ``fork`` and ``own`` the new child is not judged).

uvloop refuses a SIGCHLD handler (libuv uses the signal itself), hence the bounded polling.
Under systemd the unit's cgroup already holds every descendant: ``KillMode=mixed`` SIGKILLs what
is left when fleet exits, whatever it did with ``setsid``.

``plan`` is pure (a snapshot in, decisions out); ``Reaper`` is the thin I/O shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import psutil

from fleet.tasks import cancel_and_wait

PR_SET_CHILD_SUBREAPER = 36
SCAN_INTERVAL = 1.0
# After kill_all, how long to wait for the killed orphans to become reapable zombies.
KILL_REAP_WAIT = 1.0


def become_subreaper() -> bool:
    """Make this process the reaper of orphans below it (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@dataclass(frozen=True)
class Proc:
    """One process of the snapshot."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    zombie: bool
    name: str = ""


@dataclass(frozen=True)
class Plan:
    reap: tuple[int, ...]  # zombie orphans: waitpid(pid, WNOHANG) each
    groups: Mapping[int, int | None]  # new escaped group -> the worker pid it belongs to (None: unknown)
    first: Mapping[int, Proc]  # group -> one member, to name it in fleet's output


def plan(procs: list[Proc], master: Proc, workers: Mapping[int, int], others: frozenset[int],
         known: Mapping[int, int | None], spawning: bool) -> Plan:
    """Decide what to reap and which process groups to register.

    ``workers`` maps each worker pid to its group; ``others`` are the master's other own children
    (the watchdog); ``known`` are the groups registered already; ``spawning`` is True while the
    master may have a child it has not declared yet (such children are left alone).
    """
    by_pid = {p.pid: p for p in procs}
    forbidden = {0, 1, master.pgid, master.sid, master.pid, *workers.values()}
    reap: list[int] = []
    groups: dict[int, int | None] = {}
    first: dict[int, Proc] = {}
    for proc in procs:
        if proc.pid == master.pid or proc.pid in workers or proc.pid in others:
            continue
        if proc.zombie:
            if proc.ppid == master.pid and not spawning:
                reap.append(proc.pid)
            continue
        top = proc
        seen = {proc.pid}
        while top.ppid in by_pid and top.ppid not in workers and top.ppid != master.pid:
            top = by_pid[top.ppid]
            if top.pid in seen:  # a cycle can only come from a snapshot raced with pid reuse
                break
            seen.add(top.pid)
        if top.ppid in workers:
            owner: int | None = top.ppid
        elif top.ppid == master.pid and top.pid not in others and not spawning:
            # An orphan (or below one). It kept the session of its worker unless it called setsid.
            owner = proc.sid if proc.sid in workers else None
        else:
            continue  # below the watchdog, raced, or maybe a child being spawned: next scan
        if owner is not None and proc.pgid == workers[owner]:
            continue  # still in its worker's group: killpg and the watchdog reach it already
        if proc.pgid in forbidden or proc.pgid in known or proc.pgid in groups:
            continue
        groups[proc.pgid] = owner
        first[proc.pgid] = proc
    return Plan(tuple(reap), groups, first)


def snapshot(master_pid: int) -> tuple[Proc, list[Proc]]:
    """The master and its descendants now (processes that vanish meanwhile are left out).

    Blocking (one read per process on the machine): run it off the event loop.
    """
    table = _proc_table() if os.path.isdir("/proc/self") else _psutil_table()
    if master_pid not in table:
        raise ProcessLookupError(master_pid)
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: list[Proc] = []
    pending = list(children.get(master_pid, ()))
    while pending:
        pid = pending.pop()
        found.append(table[pid])
        pending.extend(children.get(pid, ()))
    return table[master_pid], found


def _proc_table() -> dict[int, Proc]:
    """Every process from ``/proc/*/stat``: one read each gives parent, group, session, state."""
    table: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
            end = data.rindex(b")")  # the command name may itself contain ") "
            state, ppid, pgid, sid = data[end + 2:].split(b" ", 4)[:4]
            comm = data[data.index(b"(") + 1:end].decode("utf-8", "replace")
            table[int(name)] = Proc(int(name), int(ppid), int(pgid), int(sid), state in (b"Z", b"X"), comm)
        except (OSError, ValueError):
            continue  # exited while we listed, or not ours to read
    return table


def _psutil_table() -> dict[int, Proc]:
    """Where there is no /proc (macOS): the same table through psutil (no subreaper there)."""
    table: dict[int, Proc] = {}
    for process in psutil.process_iter(["ppid", "status", "name"]):
        try:
            zombie = process.info["status"] == psutil.STATUS_ZOMBIE
            pgid, sid = (-1, -1) if zombie else (os.getpgid(process.pid), os.getsid(process.pid))
            table[process.pid] = Proc(process.pid, process.info["ppid"], pgid, sid, zombie,
                                      process.info["name"] or "")
        except (psutil.Error, OSError):
            continue
    return table


class Reaper:
    """Keeps every escaped process group registered with the watchdog and ends them in order."""

    def __init__(self, register: Callable[[int], None], unregister: Callable[[int], None],
                 say: Callable[[str], None], label: Callable[[int], str]) -> None:
        self._register = register
        self._unregister = unregister
        self._say = say
        self._label = label  # worker pid -> "w1:5101" for fleet's output
        self._pid = os.getpid()
        self._workers: dict[int, int] = {}  # worker pid -> its process group
        self._others: set[int] = set()
        self._spawning = 0
        self._epoch = 0  # bumped whenever the set of the master's own children may change
        self._groups: dict[int, int | None] = {}  # registered group -> owning worker pid (None: unknown)
        self.subreaper = become_subreaper()
        self._task: asyncio.Task[None] | None = None

    # -- what the master spawns on purpose ----------------------------------------------------
    def own(self, pid: int, pgid: int | None = None) -> None:
        """Declare a child of the master (a worker with its group, or a helper such as the watchdog)."""
        self._epoch += 1
        if pgid is None:
            self._others.add(pid)
        else:
            self._workers[pid] = pgid

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        self._spawning += 1
        self._epoch += 1
        try:
            yield
        finally:
            self._spawning -= 1
            self._epoch += 1

    # -- scanning -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SCAN_INTERVAL)
            epoch = self._epoch
            try:
                # Reading /proc costs about 20 ms on a slow kernel: never on the event loop.
                master, procs = await asyncio.to_thread(snapshot, self._pid)
            except (OSError, psutil.Error) as exc:
                self._say(f"warning: cannot list fleet's processes: {exc}")
                continue
            if epoch == self._epoch:  # else a worker was spawned or exited meanwhile: next time
                self.apply(master, procs)

    def scan_now(self) -> None:
        """One pass on the calling thread (at stop, and in tests)."""
        self.apply(*snapshot(self._pid))

    def apply(self, master: Proc, procs: list[Proc]) -> None:
        """Act on a snapshot: reap zombie orphans, register new escaped groups, forget vanished ones."""
        decided = plan(procs, master, self._workers, frozenset(self._others), self._groups,
                       self._spawning > 0)
        for pid in decided.reap:
            self._reap(pid)
        for pgid, owner in decided.groups.items():
            self._groups[pgid] = owner
            self._register(pgid)
            member = decided.first[pgid]
            if owner is not None:
                self._say(f"{self._label(owner)}: pid {member.pid} ({member.name}) left the worker's "
                          f"process group; it will be stopped with the worker")
            else:
                self._say(f"pid {member.pid} ({member.name}) was orphaned below fleet; "
                          f"it will be stopped when fleet stops")
        for pgid in list(self._groups):
            if not _group_exists(pgid):
                del self._groups[pgid]
                self._unregister(pgid)

    def _reap(self, pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)  # this pid only: never another child's exit status
        except ChildProcessError:
            pass  # gone already (reaped by whoever spawned it)

    # -- ending -------------------------------------------------------------------------------
    def worker_exited(self, pid: int) -> None:
        """A worker's process ended: its escaped groups go with it."""
        self._epoch += 1
        self._workers.pop(pid, None)
        self._kill([pgid for pgid, owner in self._groups.items() if owner == pid])

    def _kill(self, pgids: list[int]) -> None:
        for pgid in pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # gone already
            self._groups.pop(pgid, None)
            self._unregister(pgid)

    async def kill_all(self) -> None:
        """After the workers: kill every escaped group left, reap the killed orphans, stop scanning."""
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait([task])
        self.scan_now()  # an orphan born since the last scan is registered (and then killed) too
        self._kill(list(self._groups))
        deadline = asyncio.get_running_loop().time() + KILL_REAP_WAIT
        while asyncio.get_running_loop().time() < deadline:
            master, procs = await asyncio.to_thread(snapshot, self._pid)
            zombies = plan(procs, master, self._workers, frozenset(self._others), {}, False).reap
            if not zombies and not any(p.ppid == self._pid and p.pid not in self._workers
                                       and p.pid not in self._others for p in procs):
                return
            for pid in zombies:
                self._reap(pid)
            await asyncio.sleep(0.05)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else now; forget it only when it is gone


__all__ = ["Proc", "Plan", "plan", "snapshot", "Reaper", "become_subreaper"]
