"""Keeping a managed nginx in step with fleet's workers: a graceful reload per change.

Open-source nginx has no run-time API, no per-server drain state, no per-server counts and no
queue. So fleet rewrites the configuration with the servers nginx may send new requests to
(ready workers, and serving ones restarting after a crash) and sends the master SIGHUP
(``nginx -s reload``): new nginx workers use the new list at once, old nginx workers finish
their requests and WebSockets (up to ``worker_shutdown_timeout`` = ``--drain-timeout``) and
exit. A replaced fleet worker is therefore idle once every nginx worker that existed before
the reload which removed it has exited: that is what ``wait_idle`` waits for. It cannot tell
one fleet worker's requests from another's, so a long WebSocket on any old nginx worker keeps
every worker replaced by that reload alive (up to the timeout).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Callable

import psutil

from fleet.dataplane.model import PlaneModel
from fleet.supervisor.process import Output
from fleet.tasks import cancel_and_wait, wait_event

# Changes that arrive together (a reload's batch) become one nginx reload.
SETTLE = 0.05
RELOAD_WAIT = 10.0
IDLE_POLL = 0.2


def nginx_workers(master_pid: int) -> set[int]:
    """The master's worker processes (all its children: no cache manager is configured)."""
    try:
        return {child.pid for child in psutil.Process(master_pid).children()
                if child.status() != psutil.STATUS_ZOMBIE}
    except psutil.Error:
        return set()


class NginxSync:
    def __init__(self, model: PlaneModel, write: Callable[[], str], master_pid: Callable[[], int | None],
                 output: Output) -> None:
        self.model = model
        self._write = write  # renders and writes the configuration; returns its text
        self._master_pid = master_pid
        self.output = output
        self._text = ""
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._old_workers: dict[str, set[int]] = {}  # slot -> nginx workers that may still use it
        self._listed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def rendered(self, text: str) -> None:
        """The configuration nginx starts (or restarts) with."""
        self._text = text
        self._listed = {s.id for s in self.model.nginx_servers()}

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    def changed(self) -> None:
        self._synced.clear()
        self._dirty.set()

    async def resync(self) -> None:
        self.changed()
        await wait_event(self._synced, RELOAD_WAIT)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(SETTLE)
            self._dirty.clear()
            await self._reload_if_changed()
            if not self._dirty.is_set():
                self._synced.set()

    async def _reload_if_changed(self) -> None:
        listed = {s.id for s in self.model.nginx_servers()}
        removed = self._listed - listed
        master = self._master_pid()
        before = nginx_workers(master) if master else set()
        text = self._write()
        if text == self._text or master is None:
            self._text = text if master is None else self._text
            return
        self._text, self._listed = text, listed
        for slot in removed:
            self._old_workers[slot] = set(before)
        try:
            os.kill(master, signal.SIGHUP)
        except ProcessLookupError:
            return  # it died; its restart reads the new file
        self.reloads += 1
        deadline = time.monotonic() + RELOAD_WAIT
        # Reloaded once a worker of the new configuration runs (the old ones are told to quit).
        while time.monotonic() < deadline and not (nginx_workers(master) - before):
            await asyncio.sleep(0.02)
        if not nginx_workers(master) - before:
            self.output.fleet(f"nginx did not start new workers within {RELOAD_WAIT:g} s of a reload "
                              f"(see its output above)")

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        slot = self.model.slot_of(worker_id)
        if slot is None:
            return True
        await wait_event(self._synced, RELOAD_WAIT)
        old = self._old_workers.pop(slot.name, set())
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            master = self._master_pid()
            left = old & nginx_workers(master) if master else set()
            if not left:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(IDLE_POLL, max(0.0, deadline - time.monotonic())))

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
