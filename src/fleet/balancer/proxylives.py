"""The proxy processes of ``--proxy-processes N``, as the master keeps them alive.

``ProxyLives`` is the supervision half of ``balancer.group.ProxyGroup``: start a proxy process
(``balancer.child``) for each row, read what it says, restart it with the workers'
``RestartPolicy`` when it dies (zeroing its row of the load table and folding its counters
into the base first), and keep one spare process started in reserve so a dead one is replaced
in the time it takes to bind. ``ProxyGroup`` adds what the rest of fleet sees (``Balancer``'s
interface) and the totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any, Callable

from fleet.balancer import snapshot
from fleet.balancer.child import LINE_LIMIT, encode, pack
from fleet.balancer.loadtable import LoadTable
from fleet.balancer.proxystate import ProxyState, transition
from fleet.balancer.settings import ProxyViews
from fleet.supervisor.policy import RestartPolicy
from fleet.supervisor.process import _child_setup
from fleet.tasks import cancel_and_wait

START_TIMEOUT = 30.0  # a proxy process that has not bound its port by then fails the start
CLOSE_WAIT = 5.0  # after "close", a proxy process that has not exited is killed
SPARE_RETRY = 1.0  # a spare proxy process that died unused is replaced after this
SYNC_WAIT = 5.0  # settle() waits at most this for each proxy process's answer


class Launched:
    """A proxy process and the master's end of its control socket."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proc, self.reader, self.writer = proc, reader, writer


class ProxySlot:
    """One row: the proxy process that serves it now, and its restart policy."""

    def __init__(self, row: int) -> None:
        self.row = row
        self.policy = RestartPolicy()
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.started_at = 0.0
        self.snapshot: snapshot.Snapshot | None = None
        self.started: asyncio.Future[str | None] | None = None  # None: serving; str: bind error
        self.drained: asyncio.Future[bool] | None = None
        self.restarts = 0
        self.state = ProxyState.STARTING
        self.since: float | None = None  # wall clock: when the current process began serving
        self.connections = 0  # client connections it holds (its last stats message)
        self.requests = 0  # requests it relayed since its start, removed workers' included
        self.syncs: dict[int, asyncio.Future[None]] = {}  # settle(): sent, not yet answered

    @property
    def serving(self) -> bool:
        """Its listener is bound and accepts (it said "started", fleet is not stopping)."""
        return self.state is ProxyState.SERVING

    def move(self, state: ProxyState) -> None:
        self.state = transition(self.state, state)

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(message))


class ProxyLives:
    """Proxy processes, one per row of ``table``, restarted when they die (until closing)."""

    views: ProxyViews
    table: LoadTable
    slots: list[ProxySlot]
    _unix: socket.socket | None

    def __init__(self, say: Callable[[str], None] | None) -> None:
        self.say = say or (lambda line: print(f"fleet | {line}", flush=True))
        self._base = snapshot.empty()  # counters of proxy processes that died
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._spare: Launched | None = None
        self._spare_taken = asyncio.Event()
        self._accepting = True  # False once fleet stops: a new proxy process is told at once
        self._syncs = 0
        # Set by fleet up: declare each proxy process to the supervisor's reaper.
        self.spawning: Callable[[], Any] = contextlib.nullcontext
        self.own: Callable[[int], None] = lambda pid: None

    def _welcome(self, slot: ProxySlot) -> None:
        """A proxy process serves: send it what it must know (``ProxyGroup``)."""
        raise NotImplementedError

    def _refresh(self) -> None:
        """The counters changed: update the totals (``ProxyGroup``)."""
        raise NotImplementedError

    def declare(self, spawning: Callable[[], Any], own: Callable[[int], None]) -> None:
        """``fleet up``: the supervisor's reaper must know the proxy processes (it would reap
        their exit status otherwise), those running now and every later one."""
        self.spawning, self.own = spawning, own
        for slot in self.slots:
            if slot.proc is not None:
                own(slot.proc.pid)

    async def _launch(self) -> Launched:
        """A proxy process that has imported everything and waits for its row and config."""
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno(), self.table.fd]
        argv = [sys.executable, "-m", "fleet.balancer.child", "--control-fd", str(theirs.fileno()),
                "--table-fd", str(self.table.fd), "--rows", str(len(self.slots))]
        if self._unix is not None:
            fds.append(self._unix.fileno())
            argv += ["--unix-fd", str(self._unix.fileno())]
        try:
            with self.spawning():
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=_child_setup(os.getpid()), pass_fds=tuple(fds))
                self.own(proc.pid)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        return Launched(proc, reader, writer)

    async def _spawn(self, slot: ProxySlot) -> asyncio.subprocess.Process:
        spare, self._spare = self._spare, None
        if spare is not None and spare.proc.returncode is None:
            self._spare_taken.set()  # _keep_spare starts the next one
            launched = spare
        else:
            launched = await self._launch()
        slot.proc, slot.writer = launched.proc, launched.writer
        slot.started_at = time.monotonic()
        slot.move(ProxyState.STARTING)
        slot.since, slot.connections, slot.requests = None, 0, 0
        slot.send({"op": "config", "row": slot.row, "config": pack(self.views)})
        self._tasks = [task for task in self._tasks if not task.done()]  # a crash loop runs for days
        self._tasks.append(asyncio.get_running_loop().create_task(self._listen(slot, launched.reader)))
        return launched.proc

    async def _keep_spare(self) -> None:
        """One started, idle proxy process in reserve: a dead one is replaced in the time it
        takes to bind, not the second or more Python needs to start and import under load."""
        while not self._closing:
            spare = self._spare = await self._launch()
            self._spare_taken.clear()
            died = asyncio.ensure_future(spare.proc.wait())
            taken = asyncio.ensure_future(self._spare_taken.wait())
            try:
                await asyncio.wait({died, taken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait([died, taken])
            if not self._spare_taken.is_set():  # it died unused: not in a tight loop
                self._spare = None
                await asyncio.sleep(SPARE_RETRY)

    async def _listen(self, slot: ProxySlot, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, ConnectionError):
                break
            if not line:
                break
            message = json.loads(line)
            op = message.get("op")
            if op == "stats":
                slot.snapshot = message["stats"]
                process = message.get("process", {})
                slot.connections, slot.requests = process.get("connections", 0), process.get("requests", 0)
                self._refresh()
            elif op == "synced":
                future = slot.syncs.pop(message["n"], None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif op == "started":
                slot.move(ProxyState.SERVING if self._accepting else ProxyState.STOPPING)
                slot.since = time.time()
                self._welcome(slot)
                if slot.started is not None and not slot.started.done():
                    slot.started.set_result(None)
            elif op == "error":
                if slot.started is not None and not slot.started.done():
                    slot.started.set_result(message["message"])
            elif op == "drained" and slot.drained is not None and not slot.drained.done():
                slot.drained.set_result(bool(message["ok"]))

    async def _keep(self, slot: ProxySlot) -> None:
        """Run the slot's proxy process, and a new one each time it dies (until close)."""
        first = True
        while not self._closing:
            try:
                proc = await self._spawn(slot)
            except OSError as exc:  # cannot even start Python: the user must see why
                if slot.started is not None and not slot.started.done():
                    slot.started.set_result(f"cannot start a proxy process: {exc}")
                    slot.move(ProxyState.STOPPED)
                    return
                self.say(f"cannot start proxy process {slot.row}: {exc}; retrying in {SPARE_RETRY:g} s")
                await asyncio.sleep(SPARE_RETRY)
                continue
            returncode = await proc.wait()
            slot.writer = None
            self._bury(slot)
            if self._closing:
                slot.move(ProxyState.STOPPED)
                return
            if first and slot.started is not None and not slot.started.done():
                slot.started.set_result(f"proxy process {slot.row} exited with code {returncode} at start")
                slot.move(ProxyState.STOPPED)
                return
            first = False
            slot.move(ProxyState.RESTARTING)
            decision = slot.policy.on_exit(slot.started_at, time.monotonic(), returncode,
                                           ever_ready=True, starting_up=False)
            slot.restarts += 1
            looping = " (crash-looping)" if decision.crash_looping else ""
            self.say(f"proxy process {slot.row} (pid {proc.pid}) {decision.reason}; "
                     f"restarting in {decision.delay:.1f} s{looping}")
            await asyncio.sleep(decision.delay)

    def _bury(self, slot: ProxySlot) -> None:
        """A proxy process is gone: its gauges to zero, its counters into the base."""
        self.table.zero_row(slot.row)
        if slot.snapshot is not None:
            self._base = snapshot.add(self._base, slot.snapshot, with_gauges=False)
            slot.snapshot = None
        if slot.drained is not None and not slot.drained.done():
            slot.drained.set_result(True)  # nothing of it is left in flight
        for future in slot.syncs.values():
            if not future.done():
                future.set_result(None)  # it has nothing left to apply
        slot.syncs.clear()
        slot.since, slot.connections = None, 0
        self._refresh()

    def _broadcast(self, message: dict[str, Any]) -> None:
        for slot in self.slots:
            slot.send(message)

    async def settle(self, timeout: float = SYNC_WAIT) -> None:
        """Return once every live proxy process has applied every message sent so far (a
        round trip each: messages are applied in order). ``fleet reload`` answers only then,
        so a request sent after the answer finds the old generation draining in every
        process, not only in the master; the stop closes every listener before it drains."""
        loop = asyncio.get_running_loop()
        waits = []
        for slot in self.slots:
            if slot.writer is None or slot.writer.is_closing():
                continue
            self._syncs += 1
            future = slot.syncs[self._syncs] = loop.create_future()
            slot.send({"op": "sync", "n": self._syncs})
            waits.append(future)
        if waits:
            await asyncio.wait(waits, timeout=timeout)  # a stuck process must not stall fleet

    def processes(self) -> list[dict[str, Any]]:
        """For ``fleet status``: each proxy process, its state, since when it serves, its
        restarts, the client connections it holds and the requests it relayed (since its
        start: a monotonic count, removed workers included)."""
        rows = []
        now = time.time()
        for slot in self.slots:
            alive = slot.proc is not None and slot.proc.returncode is None
            rows.append({"row": slot.row, "pid": slot.proc.pid if alive and slot.proc else None,
                         "state": slot.state.value, "serving": alive and slot.serving,
                         "started_at": slot.since if alive else None,
                         "uptime": now - slot.since if alive and slot.since else None,
                         "restarts": slot.restarts, "connections": slot.connections if alive else 0,
                         "requests": slot.requests})
        return rows
