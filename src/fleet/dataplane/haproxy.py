"""Keeping a managed HAProxy in step with fleet's workers, through its runtime API.

Every port slot is a server in the configuration (``PlaneModel``); fleet sets each one's admin
state over the stats socket as workers come and go:

    a worker becomes ready            set server fleet_workers/w0 state ready
    it is replaced (reload, recycle,  set server ... state drain   (no new clients; requests
      scale down)                                                  pinned by the cookie still
                                                                   reach it, as with fleet)
    idle (``show stat``: no session,  set server ... state maint   then fleet TERMs the worker
      nothing queued) or timeout

A restarted HAProxy reads a configuration rendered from the same slots (maint ones
``disabled``) and gets the drain states again (``resync``). So does a reloaded one (``reload``,
for ``fleet reload``): HAProxy runs in master-worker mode, SIGUSR2 makes the master start a new
worker on the same listening sockets while the old worker finishes its connections (WebSockets
included) and exits. Until it has, a draining slot is not idle: the old worker may still relay
to it, and ``show stat`` reaches only the new one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Callable

from fleet.dataplane.model import PlaneModel, ServerState, parse_stat, state_command
from fleet.dataplane.nginx import nginx_workers as children
from fleet.supervisor.process import Output
from fleet.tasks import cancel_and_wait, wait_event, with_timeout

COMMAND_TIMEOUT = 5.0
RELOAD_WAIT = 10.0  # for the new worker of a reload to answer on the runtime API
# How often a draining server's sessions are read: HAProxy has no "idle" notification.
IDLE_POLL = 0.2
MAX_REPLY = 4 * 1024 * 1024


class RuntimeAPI:
    """One command per connection on HAProxy's stats socket (``level admin``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def command(self, line: str) -> str:
        async def exchange() -> str:
            reader, writer = await asyncio.open_unix_connection(self.path)
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                reply = await reader.read(MAX_REPLY)
                while chunk := await reader.read(MAX_REPLY):
                    reply += chunk
                    if len(reply) > MAX_REPLY:
                        break
                return reply.decode("utf-8", "replace")
            finally:
                writer.close()

        return await with_timeout(exchange(), COMMAND_TIMEOUT)


class HAProxySync:
    """Applies the model's admin states; ``wait_idle`` for the supervisor's drains."""

    def __init__(self, model: PlaneModel, api: RuntimeAPI, output: Output) -> None:
        self.model = model
        self.api = api
        self.output = output
        self._applied: dict[str, ServerState] = {}
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # say a run-time API failure once, not every retry
        # Held while a reload swaps the worker: no admin state is sent to a worker on its way out.
        self._reloading = asyncio.Lock()
        self._old_workers: set[int] = set()  # HAProxy workers replaced by a reload, maybe still relaying
        self.reloads = 0

    def start(self) -> None:
        self.rendered()
        self._task = asyncio.ensure_future(self._loop())

    def rendered(self) -> None:
        """A configuration was just written: HAProxy will start with maint (OFF) slots disabled
        and every other slot ready; drain states must be set again."""
        self._applied = {name: ServerState.OFF if slot.state is ServerState.OFF else ServerState.READY
                         for name, slot in self.model.slots.items()}

    async def resync(self) -> None:
        self.changed()
        await self.synced()

    def changed(self) -> None:
        self._synced.clear()
        self._dirty.set()

    async def synced(self, timeout: float = 10.0) -> bool:
        return await wait_event(self._synced, timeout)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._apply()
            except (OSError, TimeoutError) as exc:
                if not self._failing:
                    self.output.fleet(f"haproxy runtime API: {exc or type(exc).__name__}; retrying")
                self._failing = True
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            self._failing = False
            if not self._dirty.is_set():
                self._synced.set()

    async def reload(self, master: int, write: Callable[[], object]) -> str | None:
        """Write the configuration and reload HAProxy (SIGUSR2 to the master); return once the
        new worker answers on the runtime API with every admin state applied. None, or why not."""
        async with self._reloading:
            before = children(master)
            write()
            self.rendered()  # what the new worker starts with; the drains are sent again below
            try:
                os.kill(master, signal.SIGUSR2)
            except ProcessLookupError:
                return "haproxy is not running; its restart reads the new configuration"
            self.reloads += 1
            self._old_workers |= before
            new = await self._new_worker(master, before)
        await self.resync()  # the drain states again, to the new worker (or the old one, still serving)
        if new is None:
            return f"haproxy did not start a worker with the new configuration within {RELOAD_WAIT:g} s"
        return None

    async def _new_worker(self, master: int, before: set[int]) -> int | None:
        """The reload's new worker once the runtime API socket is its (``show info``)."""
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            for pid in children(master) - before:
                try:
                    info = await self.api.command("show info")
                except (OSError, TimeoutError):
                    continue
                if f"\nPid: {pid}\n" in "\n" + info:
                    return pid
            await asyncio.sleep(0.05)
        return None

    def _old_relaying(self, master: int | None) -> bool:
        """Whether a worker replaced by a reload still runs (and may relay to a draining slot)."""
        if self._old_workers:
            self._old_workers &= children(master) if master else set()
        return bool(self._old_workers)

    async def _apply(self) -> None:
        async with self._reloading:
            await self._apply_states()

    async def _apply_states(self) -> None:
        for name, slot in list(self.model.slots.items()):
            if self._applied.get(name) is slot.state:
                continue
            reply = await self.api.command(state_command(name, slot.state))
            if reply.strip():
                self.output.fleet(f"haproxy: {state_command(name, slot.state)}: {reply.strip()}")
            self._applied[name] = slot.state

    async def sessions(self, name: str) -> int | None:
        loads = parse_stat(await self.api.command("show stat"))
        load = loads.get(name)
        return None if load is None else load.sessions + load.queued

    async def wait_idle(self, worker_id: str, timeout: float | None, master: int | None = None) -> bool:
        """Wait until the draining ``worker_id`` has no session and nothing queued, and no
        HAProxy worker replaced by a reload of ``master`` runs (True), or ``timeout`` passed
        (False); either way its server is in maint when this returns."""
        slot = self.model.slot_of(worker_id)
        if slot is None:
            return True
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        await self.synced()
        idle = False
        while True:
            try:
                left = await self.sessions(slot.name)
            except (OSError, TimeoutError):
                left = None  # HAProxy restarting: it holds none of this worker's requests now
            if left is not None and left == 0 and not self._old_relaying(master):
                # maint first, then look again: a request pinned by its cookie may have come in
                # between the two reads; it is let finish.
                await self._maint(slot.name)
                try:
                    again = await self.sessions(slot.name)
                except (OSError, TimeoutError):
                    again = None
                if not again:
                    idle = True
                    break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(IDLE_POLL, max(0.0, deadline - time.monotonic())))
        await self._maint(slot.name)
        return idle

    async def _maint(self, name: str) -> None:
        self.model.slots[name].state = ServerState.OFF  # the sync loop must not set drain again
        try:
            async with self._reloading:
                await self.api.command(state_command(name, ServerState.OFF))
                self._applied[name] = ServerState.OFF
        except (OSError, TimeoutError) as exc:
            self.output.fleet(f"haproxy runtime API: {exc}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
