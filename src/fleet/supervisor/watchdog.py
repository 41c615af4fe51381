"""The orphan reaper: kills every worker process group when the fleet master dies, even by ``kill -9``.

``PR_SET_PDEATHSIG`` kills a worker when the master dies, but not the worker's own children (a
``--cmd 'sh -c ...'`` worker's server, a Bokeh app's subprocess). So each fleet starts this tiny
process with a pipe: the master writes ``+PGID`` for each worker group it spawns and ``-PGID``
when it has reaped one. End of file on the pipe means the master is gone (the kernel closes
the write end whatever killed it): the watchdog SIGKILLs every recorded group and exits.

A process that left its worker's group (``setsid``) is registered by the master's reaper
(``fleet.supervisor.reaper``) once a scan has seen it, about a second later. For one that
escaped just before the master died, every worker also carries ``FLEET_FAMILY=<token>`` in its
environment, which its descendants inherit: after the groups, the watchdog kills every process
of this user whose initial environment (``/proc/PID/environ``) holds the token. Jenkins finds a
build's escaped processes the same way.

It runs in its own session and ignores INT/TERM/HUP, so a Ctrl-C in the terminal or a
``kill -- -PGID`` aimed at the master's group cannot take it down before it has done its job.
This module imports only the standard library: it is started with ``python -m``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

FAMILY_ENV = "FLEET_FAMILY"


def reap_all(groups: set[int]) -> None:
    for pgid in sorted(groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone: the graceful path reaped it, or it exited by itself


def kill_family(token: bytes, proc_dir: str = "/proc") -> list[int]:
    """SIGKILL every process whose initial environment carries ``FLEET_FAMILY=token``; their pids."""
    if not token or not os.path.isdir(proc_dir):
        return []
    needle = b"\0" + FAMILY_ENV.encode() + b"=" + token + b"\0"
    killed = []
    for name in os.listdir(proc_dir):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(os.path.join(proc_dir, name, "environ"), "rb") as environ:
                if needle not in b"\0" + environ.read() + b"\0":
                    continue
            os.kill(int(name), signal.SIGKILL)
            killed.append(int(name))
        except (OSError, ValueError):
            continue  # gone, or another user's process (not readable, not ours)
    return killed


def main() -> int:
    token = os.environ.pop(FAMILY_ENV, "").encode()
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
    kill_family(token)
    return 0


class Watchdog:
    """The master's handle on its watchdog process."""

    def __init__(self) -> None:
        # Given to every worker (``family_env``); the watchdog kills what still carries it.
        self.token = secrets.token_hex(16)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.supervisor.watchdog"],
            env={**os.environ, FAMILY_ENV: self.token},
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

    def family_env(self) -> dict[str, str]:
        """The environment marker every worker (and so its descendants) inherits."""
        return {FAMILY_ENV: self.token}

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
