"""The life of one proxy process of ``--proxy-processes N`` (one row), as ``fleet status``
shows it: an Enum and its transition table, no I/O.

``balancer.proxylives`` moves a ``ProxySlot`` through these states; a move not in the table
is a fleet bug and raises. A row's process can die and come back many times, so the table
is a cycle, not a line: STARTING -> SERVING -> (died) RESTARTING -> STARTING ... until the
master stops (STOPPING: listeners closed, in-flight requests finishing; STOPPED: gone).
"""

from __future__ import annotations

import enum


class ProxyState(enum.Enum):
    STARTING = "starting"  # launched (or the spare taken), its listener not bound yet
    SERVING = "serving"  # its listener is bound: the kernel gives it connections
    RESTARTING = "restarting"  # it died; a new one starts after the restart policy's delay
    STOPPING = "stopping"  # fleet stops: no new connections, in-flight requests finish
    STOPPED = "stopped"  # exited for good (fleet stopped, or it could not start)


P = ProxyState
TRANSITIONS: dict[ProxyState, frozenset[ProxyState]] = {
    P.STARTING: frozenset({P.SERVING, P.RESTARTING, P.STOPPING, P.STOPPED}),
    P.SERVING: frozenset({P.RESTARTING, P.STOPPING, P.STOPPED}),
    P.RESTARTING: frozenset({P.STARTING, P.STOPPING, P.STOPPED}),
    # A process can die while it drains: it is restarted (its replacement does not accept:
    # STARTING -> STOPPING once it has bound), until the master closes.
    P.STOPPING: frozenset({P.RESTARTING, P.STOPPED}),
    P.STOPPED: frozenset(),
}


class InvalidProxyTransition(RuntimeError):
    """A move the table does not allow: a bug in fleet, never a user error."""


def transition(current: ProxyState, new: ProxyState) -> ProxyState:
    """``new`` if the table allows ``current -> new`` (or it is the same state); raise otherwise."""
    if new is not current and new not in TRANSITIONS[current]:
        raise InvalidProxyTransition(f"proxy process cannot go from {current.value} to {new.value}")
    return new


__all__ = ["InvalidProxyTransition", "ProxyState", "TRANSITIONS", "transition"]
