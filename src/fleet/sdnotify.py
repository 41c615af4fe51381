"""systemd ``Type=notify`` support without a dependency: datagrams to ``$NOTIFY_SOCKET``.

What fleet says, and when (see sd_notify(3)):

- ``READY=1`` once the workers are ready and the control socket serves (so ``systemctl start``
  returns when the app can be used);
- ``RELOADING=1`` (with ``MONOTONIC_USEC``, which systemd 253+ wants) when a reload starts
  (``ExecReload`` sends SIGHUP; Debian 12's systemd 252 has no ``Type=notify-reload``), and
  ``READY=1`` when it ends;
- ``STOPPING=1`` when a graceful stop starts;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=`` (and
  ``$WATCHDOG_PID``, if set, is fleet's pid): sent by a task on the master's event loop, so a
  stuck loop stops the pings and systemd restarts the service.

``NOTIFY_SOCKET`` may be a path or an abstract-namespace name (``@name``). Sending never blocks
and never fails the caller: systemd being gone is not fleet's problem; a full queue delays a
state message (retried for up to 5 s) and drops a watchdog ping. Workers and hooks do not
inherit these variables (``supervisor.command.worker_environment``), or a worker could claim
readiness for the whole service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Mapping

from fleet.supervisor.command import SYSTEMD_ENV as ENVIRONMENT
from fleet.supervisor.process import Output

WATCHDOG = b"WATCHDOG=1\n"
RETRIES = 600  # a state message waits up to RETRIES * RETRY_INTERVAL (30 s) for room in systemd's queue
RETRY_INTERVAL = 0.05


def socket_address(value: str | None) -> str | bytes | None:
    """The address to send to: a filesystem path, or ``\\0name`` for ``@name``; None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout, as sd_watchdog_enabled advises)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    return usec / 2 / 1_000_000


def message(*fields: str, status: str | None = None) -> bytes:
    lines = list(fields)
    if status is not None:
        lines.append("STATUS=" + status.replace("\n", " "))
    return ("\n".join(lines) + "\n").encode()


class SystemdNotifier:
    """Sends fleet's state to systemd; every method is a no-op outside a ``Type=notify`` unit."""

    def __init__(self, address: str | bytes | None, watchdog: float | None, output: Output) -> None:
        self.address = address
        self.watchdog_interval = watchdog if address is not None else None
        self._output = output
        self._socket: socket.socket | None = None
        self._warned = False
        self._waiting = 0  # state messages waiting for room in the queue

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], output: Output) -> "SystemdNotifier":
        return cls(socket_address(environ.get("NOTIFY_SOCKET")), watchdog_interval(environ, os.getpid()),
                   output)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, data: bytes, tries: int = RETRIES) -> None:
        if self.address is None:
            return
        if data == WATCHDOG and self._waiting:
            return  # a ping would take the queue slot a waiting state change needs
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(data, self.address)
        except BlockingIOError:
            # systemd's queue is full (it reads it later): a state change must still arrive, so
            # try again shortly, from the loop; a watchdog ping can be dropped, the next one comes.
            if tries > 1 and data != WATCHDOG:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return
                self._waiting += 1
                loop.call_later(RETRY_INTERVAL, self._retry, data, tries - 1)
        except OSError as exc:
            if not self._warned:  # once: a gone systemd must not flood fleet's output
                self._warned = True
                self._output.fleet(f"warning: cannot notify systemd at $NOTIFY_SOCKET: {exc.strerror or exc}")

    def _retry(self, data: bytes, tries: int) -> None:
        self._waiting -= 1
        self.send(data, tries)

    def ready(self, status: str) -> None:
        self.send(message("READY=1", f"MAINPID={os.getpid()}", status=status))

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(message("RELOADING=1", f"MONOTONIC_USEC={usec}", status="rolling reload"))

    def stopping(self) -> None:
        self.send(message("STOPPING=1", status="stopping"))

    async def watchdog(self) -> None:
        """Ping until cancelled (runs as a background task of the master)."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.send(WATCHDOG)
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


__all__ = ["ENVIRONMENT", "SystemdNotifier", "message", "socket_address", "watchdog_interval"]
