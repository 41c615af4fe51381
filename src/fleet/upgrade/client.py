"""``fleet upgrade``'s side after the running fleet accepted: the master re-executes itself,
so the answer is read from ``fleet status`` once the new code serves (or the old one recorded
why it did not happen)."""

from __future__ import annotations

import time
from typing import Any, Callable

from fleet.control import ControlError, request, socket_answers

FOLLOW_TIMEOUT = 120.0
POLL = 0.1


def outcome(status: dict[str, Any], requested_at: float) -> dict[str, Any] | None:
    """The upgrade recorded at or after ``requested_at``, if any (pure)."""
    last = (status.get("upgrade") or {}).get("last")
    if isinstance(last, dict) and float(last.get("time", 0)) >= requested_at:
        return last
    return None


def follow(path: str, requested_at: float, say: Callable[[str], None], timeout: float = FOLLOW_TIMEOUT) -> int:
    """Poll the fleet until the upgrade's outcome is recorded; the exit code (0: done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = request(path, "status", timeout=10.0)
        except ControlError:
            # Between the old code and the new the socket queues (it stays open); refused means
            # that nothing holds it any more: the new master failed after the exec.
            if not socket_answers(path):
                say("the fleet is gone: the new code failed after taking over (see fleet's output); "
                    "its workers were stopped with it")
                return 1
            time.sleep(POLL)
            continue
        last = outcome(status, requested_at)
        if last is not None:
            say(f"{last.get('result')}: {last.get('message')}")
            if last.get("result") == "done":
                say(f"fleet {status.get('version')} (pid {status.get('pid')}), "
                    f"{sum(1 for w in status.get('workers', []) if w.get('state') == 'ready')} workers ready")
                return 0
            return 1
        time.sleep(POLL)
    say(f"no outcome within {timeout:g} s: see `fleet status` and fleet's output")
    return 1


__all__ = ["follow", "outcome", "FOLLOW_TIMEOUT"]
