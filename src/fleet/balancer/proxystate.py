"""The life of one proxy process of ``--proxy-processes N`` (one row), as ``fleet status``
shows it: an Enum and its transition table, no I/O.

``balancer.proxylives`` moves a ``ProxySlot`` through these states (a
``fleet.statetable.StateTable``); a move not in the table is a fleet bug and raises, a
same-state move included unless its row lists it. A row's process can die and come back many
times, so the table is a cycle, not a line: STARTING -> SERVING -> (died) RESTARTING -> STARTING ... until the
master stops (STOPPING: listeners closed, in-flight requests finishing; STOPPED: gone).
"""

from __future__ import annotations

import enum

from fleet.statetable import InvalidTransition, StateTable


class InvalidProxyTransition(InvalidTransition):
    """A move the table does not allow: a bug in fleet, never a user error."""


class ProxyState(enum.Enum):
    STARTING = "starting"  # launched (or the spare taken), its listener not bound yet
    SERVING = "serving"  # its listener is bound: the kernel gives it connections
    RESTARTING = "restarting"  # it died; a new one starts after the restart policy's delay
    STOPPING = "stopping"  # fleet stops: no new connections, in-flight requests finish
    STOPPED = "stopped"  # exited for good (fleet stopped, or it could not start)


P = ProxyState
TABLE: StateTable[ProxyState] = StateTable("proxy process", {
    # STARTING -> STARTING: a slot is made STARTING, and its first launch moves it there again.
    P.STARTING: {P.STARTING, P.SERVING, P.RESTARTING, P.STOPPING, P.STOPPED},
    P.SERVING: {P.RESTARTING, P.STOPPING, P.STOPPED},
    P.RESTARTING: {P.STARTING, P.STOPPING, P.STOPPED},
    # A process can die while it drains: it is restarted (its replacement does not accept:
    # STARTING -> STOPPING once it has bound), until the master closes. STOPPING -> STOPPING:
    # a replacement that binds after stop_accepting already moved its slot to STOPPING.
    P.STOPPING: {P.STOPPING, P.RESTARTING, P.STOPPED},
    P.STOPPED: (),
}, error=InvalidProxyTransition)
TRANSITIONS: dict[ProxyState, frozenset[ProxyState]] = TABLE.as_dict()


def transition(current: ProxyState, new: ProxyState) -> ProxyState:
    """``new`` if the table allows ``current -> new``; raise ``InvalidProxyTransition`` otherwise
    (a same-state move too, unless its row lists it)."""
    return TABLE.move(current, new)


__all__ = ["InvalidProxyTransition", "ProxyState", "TABLE", "TRANSITIONS", "transition"]
