"""Control-socket commands of the operations work, served by ``fleet up`` in front of the
master's own dispatch: ``info`` (what ``fleet ls`` shows) and ``logs`` (the last lines of each
worker, kept in memory by ``fleet.logs.LogStore``). Anything else goes to the master.

Kept apart from the master so the master's dispatch stays the one place that steers workers;
these commands only read.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from fleet.control import ControlError

if TYPE_CHECKING:
    from fleet.config.sections import WorkerSettings
    from fleet.front.interface import Front
    from fleet.supervisor.manager import Supervisor
    from fleet.supervisor.process import Output

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# A `fleet logs -n` answer is one JSON line on the control socket (bounded by control._MAX_LINE
# on the reading side too); this many lines of up to a few KiB each fit comfortably.
MAX_LOG_LINES = 5000


class Described(Protocol):
    """What ``info`` and ``logs`` read of the running fleet (``runner.Master`` is one)."""

    front: "Front"
    supervisor: "Supervisor | None"
    output: "Output"  # ``logs`` when it keeps them in memory (``fleet.logs.RecordingOutput``)

    @property
    def worker_settings(self) -> "WorkerSettings": ...


class OperationsControl:
    """Answers ``info`` and ``logs``; hands every other command to ``fallback``."""

    def __init__(self, master: Described, fallback: Handler, name: str) -> None:
        self._master = master
        self._fallback = fallback
        self.name = name
        self.started_at = time.time()

    async def __call__(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "info":
            return self.info()
        if command == "logs":
            return self.logs(args)
        return await self._fallback(command, args)

    def info(self) -> dict[str, Any]:
        master = self._master
        what = master.worker_settings
        supervisor = master.supervisor
        workers = supervisor.workers() if supervisor is not None else []
        return {
            "ok": True, "name": self.name, "pid": os.getpid(),
            "app": f"--cmd {what.cmd}" if what.cmd else str(what.app),
            "port": master.front.port,
            "workers": supervisor.desired if supervisor is not None else 0,
            "ready": sum(1 for w in workers if w.ready),
            "started_at": self.started_at,
        }

    def logs(self, args: dict[str, Any]) -> dict[str, Any]:
        store = getattr(self._master.output, "logs", None)
        if store is None:
            raise ControlError("this fleet keeps no logs in memory")
        worker = args.get("worker")
        try:
            count = int(args.get("lines", 100))
            after = int(args.get("after", 0))
        except (TypeError, ValueError):
            raise ControlError("logs needs lines: N and after: SEQ as integers") from None
        if count < 0 or after < 0:
            raise ControlError("logs: lines and after must not be negative")
        if worker is not None and not store.known(str(worker)):
            raise ControlError(f"no worker {worker!r} (known: {', '.join(store.workers()) or 'none'})")
        entries, last = store.read(None if worker is None else str(worker),
                                   min(count, MAX_LOG_LINES), after)
        return {"ok": True, "lines": entries, "last": last}


__all__ = ["OperationsControl", "MAX_LOG_LINES"]
