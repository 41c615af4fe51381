"""The worker's side of ``--worker-timeout``: prove from inside the event loop that it still turns.

A callback scheduled on the worker's own loop writes a beat every ``interval`` seconds. When the
loop is blocked (a handler calling ``time.sleep``, a tight CPU loop), no beat is written and the
master kills the worker after ``--worker-timeout``. A helper thread would keep beating while the
loop is stuck, so the beat is never written from one.

The channel is gunicorn's: a file the master created and passed as an inherited descriptor
(``FLEET_HEARTBEAT_FD``, never argv). The worker sets its times with one ``futimens`` call:
mtime = ``time.monotonic()`` of the beat (system-wide on Linux, so the master can compare it
with its own clock) and atime = the loop lag the beat measured (how late the callback ran). The
call never waits for the master, and the master reads both values with one ``fstat``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import MutableMapping

ENV_FD = "FLEET_HEARTBEAT_FD"
ENV_INTERVAL = "FLEET_HEARTBEAT_INTERVAL"


def write_beat(fd: int, beat: float, lag: float) -> None:
    """One beat: both values in one syscall, so the master never reads half of one."""
    os.utime(fd, ns=(max(0, int(lag * 1e9)), int(beat * 1e9)))


class Heartbeat:
    """Beats on the running loop every ``interval`` seconds until ``stop``."""

    def __init__(self, fd: int, interval: float) -> None:
        self.fd = fd
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> "Heartbeat | None":
        """The heartbeat fleet asked for, or None (run by hand, or ``--worker-timeout 0``).

        The variables are removed and the descriptor made non-inheritable: the app's own
        subprocesses must not hold it or see it.
        """
        environ = os.environ if environ is None else environ
        raw_fd = environ.pop(ENV_FD, None)
        raw_interval = environ.pop(ENV_INTERVAL, None)
        if raw_fd is None:
            return None
        try:
            fd = int(raw_fd)
            interval = float(raw_interval or "1")
            os.set_inheritable(fd, False)
        except (ValueError, OSError) as exc:
            sys.stderr.write(f"fleet.worker: bad {ENV_FD}={raw_fd!r} ({exc}); no heartbeat\n")
            return None
        return cls(fd, max(0.05, interval))

    def start(self) -> None:
        self._schedule()
        self._beat_now(0.0)

    def _schedule(self) -> None:
        self._due = time.monotonic() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        now = time.monotonic()
        lag = max(0.0, now - self._due)
        self._schedule()
        self._beat_now(lag, now)

    def _beat_now(self, lag: float, now: float | None = None) -> None:
        try:
            write_beat(self.fd, time.monotonic() if now is None else now, lag)
        except OSError as exc:
            # Cannot happen with the descriptor fleet passed; if it does, say so once and stop
            # (the master then treats the worker as hung, which is visible, not silent).
            sys.stderr.write(f"fleet.worker: heartbeat write failed: {exc}; no more beats\n")
            self.stop()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


__all__ = ["Heartbeat", "write_beat", "ENV_FD", "ENV_INTERVAL"]
