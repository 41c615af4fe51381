"""The orphan reaper: kills every worker process group when the fleet master dies, even by ``kill -9``.

``PR_SET_PDEATHSIG`` kills a worker when the master dies, but not the worker's own children (a
``--cmd 'sh -c ...'`` worker's server, a Bokeh app's subprocess). So each fleet starts this tiny
process with a pipe: the master writes ``+PGID`` for each worker group it spawns and ``-PGID``
when it has reaped one. End of file on the pipe means the master is gone (the kernel closes
the write end whatever killed it): the watchdog SIGKILLs every recorded group and exits.

It runs in its own session and ignores INT/TERM/HUP, so a Ctrl-C in the terminal or a
``kill -- -PGID`` aimed at the master's group cannot take it down before it has done its job.
This module imports only the standard library: it is started with ``python -m``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def reap_all(groups: set[int]) -> None:
    for pgid in sorted(groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone: the graceful path reaped it, or it exited by itself


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    stdin = sys.stdin.buffer
    for raw in stdin:
        line = raw.strip()
        if not line:
            continue
        try:
            pgid = int(line[1:])
        except ValueError:
            continue  # not our protocol; never crash before the master dies
        if pgid <= 1:
            continue  # killpg(0/1) would hit ourselves or everything
        if line.startswith(b"+"):
            groups.add(pgid)
        elif line.startswith(b"-"):
            groups.discard(pgid)
    reap_all(groups)
    return 0


class Watchdog:
    """The master's handle on its watchdog process."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.supervisor.watchdog"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None,
            start_new_session=True, close_fds=True,
        )
        self.pid = self._proc.pid
        self._broken = False

    def _send(self, line: str) -> None:
        if self._broken or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            # The watchdog died (someone killed it). Workers still have PDEATHSIG; say so once.
            self._broken = True
            sys.stderr.write("fleet | warning: the orphan watchdog is gone; workers' children "
                             "may outlive a killed master\n")

    def add(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Normal shutdown: every group was reaped already; EOF makes the watchdog exit."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # it died before us; nothing left to tell it
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    sys.exit(main())
