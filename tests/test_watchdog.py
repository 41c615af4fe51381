"""The watchdog's last resort: every process that still carries the fleet's environment marker
is killed when the master is gone (real processes, each with its own unique marker)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from fleet.supervisor.watchdog import FAMILY_ENV, kill_family
from support import alive, wait_until


def sleeper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    # its own session, as an escaped worker descendant would have
    return subprocess.Popen(["sleep", "300"], env={**os.environ, **env}, start_new_session=True)


def test_kill_family_kills_exactly_the_processes_with_its_token() -> None:
    token = secrets.token_hex(16)
    marked = sleeper({FAMILY_ENV: token})
    other = sleeper({FAMILY_ENV: secrets.token_hex(16)})
    lookalike = sleeper({"X" + FAMILY_ENV: token})  # a longer name ending the same way
    try:
        wait_until(lambda: all(alive(p.pid) for p in (marked, other, lookalike)), 5, message="sleepers up")
        assert kill_family(token.encode()) == [marked.pid]
        assert marked.wait(timeout=5) == -9
        assert alive(other.pid) and alive(lookalike.pid)
        assert kill_family(b"") == []  # no token given: never "everything"
    finally:
        for process in (marked, other, lookalike):
            process.kill()
            process.wait(timeout=5)


def test_watchdog_kills_the_family_when_its_pipe_closes() -> None:
    token = secrets.token_hex(16)
    marked = sleeper({FAMILY_ENV: token})
    watchdog = subprocess.Popen([sys.executable, "-m", "fleet.supervisor.watchdog"], stdin=subprocess.PIPE,
                                env={**os.environ, FAMILY_ENV: token})
    try:
        assert watchdog.stdin is not None
        watchdog.stdin.close()  # what the kernel does when the master dies
        assert watchdog.wait(timeout=10) == 0
        assert marked.wait(timeout=5) == -9
    finally:
        marked.kill()
        marked.wait(timeout=5)
        watchdog.kill()
        watchdog.wait(timeout=5)
