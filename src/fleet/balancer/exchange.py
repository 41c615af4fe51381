"""The life of one request through the proxy: one enum, one transition table, one timeout and
one buffer bound per state.

Pure: no sockets. ``balancer.protocol`` owns an ``Exchange`` per request and moves it with
``move``; a move the table (``TABLE``, a ``fleet.statetable.StateTable``) does not allow raises
``InvalidTransition`` (a bug in the proxy, never a client's doing). The balancer's once-a-second sweep asks ``timeout_of`` how long the
front exchange of a connection may stay where it is, so no request has a timer of its own.

    HEAD ──> PIPELINED ──> QUEUED ──> CONNECTING ──> SENDING ──> AWAITING_HEAD ──> RELAYING ──> DONE
                 │            │            │             └──────────────────────────┘            ▲
                 │            └────────────┴──> UPGRADING ──> TUNNEL ────────────────────────────┤
                 └──> (a local route, a refusal, a timeout: any state) ─────────────────────────┘

Why the request body is not a second state machine (h11 keeps two): the proxy streams the body
as it arrives, so the only question it asks is "has the whole request been read?", one flag
(``request_done``), while every question about what may happen next ("may the client's next
bytes go to the worker now?") is answered by the state alone.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

from fleet.statetable import InvalidTransition, StateTable

if TYPE_CHECKING:
    from fleet.balancer.head import Request
    from fleet.balancer.policy import Upstream


class State(enum.IntEnum):
    """An IntEnum: its members hash as ints (in C), where an Enum's hash is a Python call per
    lookup, and ``move`` looks one up in the table on every transition of every request."""

    HEAD = 1  # the request head is being read
    PIPELINED = 2  # parsed; an earlier request on the connection is answered first
    QUEUED = 3  # no worker can take it now (none ready, or all at --worker-max-conns)
    CONNECTING = 4  # a new connection to the chosen worker is being opened
    SENDING = 5  # head sent; the body is still arriving and goes straight through
    AWAITING_HEAD = 6  # the whole request is sent; waiting for the response head
    UPGRADING = 7  # an Upgrade request is sent; client bytes are held until the 101
    RELAYING = 8  # the response head went to the client; its body streams
    TUNNEL = 9  # after a 101: raw bytes both ways (WebSocket)
    DONE = 10


# The members as module globals: on Python 3.11 ``State.DONE`` is a Python-level descriptor
# call (~0.5 µs) each time, a global lookup is not; the hot path uses these names.
HEAD, PIPELINED, QUEUED, CONNECTING, SENDING, AWAITING_HEAD, UPGRADING, RELAYING, TUNNEL, DONE = State
# Dispatch (from PIPELINED or QUEUED, and again on a retry) goes to CONNECTING for a new worker
# connection, or straight to SENDING / AWAITING_HEAD / UPGRADING with a pooled one.
_DISPATCHED = frozenset({QUEUED, CONNECTING, SENDING, AWAITING_HEAD, UPGRADING, DONE})
TABLE: StateTable[State] = StateTable("exchange", {
    HEAD: {PIPELINED, DONE},
    PIPELINED: _DISPATCHED,
    QUEUED: _DISPATCHED - {QUEUED},
    # A retry (connect error, a pooled connection found dead) dispatches again.
    CONNECTING: _DISPATCHED,
    # A worker may answer before the body is complete (an early 413, a redirect).
    SENDING: {AWAITING_HEAD, RELAYING, DONE},
    AWAITING_HEAD: _DISPATCHED | {RELAYING},
    # A worker answering an Upgrade with anything but 101 relays that answer, then closes.
    UPGRADING: _DISPATCHED | {TUNNEL, RELAYING},
    RELAYING: {DONE},
    TUNNEL: {DONE},
    DONE: (),
})
TRANSITIONS: dict[State, frozenset[State]] = TABLE.as_dict()
# The table as one bit mask per state, indexed by the state's number: ``move`` runs several
# times per request, and a list index plus a shift costs less than two enum hashes.
_ALLOWED = TABLE.bitmasks()
# Any state but DONE may move to DONE (a refusal, a timeout, the end of a response): the hot
# path ends an exchange with a plain assignment, which this keeps true.
ENDS_ANYWHERE = all(DONE in targets for source, targets in TRANSITIONS.items() if source is not DONE)
assert ENDS_ANYWHERE, "every state but DONE must be allowed to move to DONE"
# States in which the exchange holds a worker connection (and counts in its active requests).
ON_WORKER = frozenset({SENDING, AWAITING_HEAD, UPGRADING, RELAYING})
# States in which request bytes read from the client are written to the worker at once; in
# every other state before DONE they are held, within --max-buffered-request.
STREAMS_BODY = frozenset({SENDING, AWAITING_HEAD, RELAYING})


class Limits(NamedTuple):
    """The settings the timeouts and bounds below are made of (seconds, bytes)."""

    header_timeout: float
    client_timeout: float
    queue_timeout: float
    connect_timeout: float
    upstream_timeout: float
    websocket_idle_timeout: float
    max_header_size: int
    max_buffered_request: int
    upgrade_hold: int
    write_high_water: int


def timeout_of(state: State, limits: Limits) -> float | None:
    """How long an exchange may stay in ``state`` without progress; ``None`` only where
    another state's timeout already bounds it (PIPELINED waits for the exchange ahead)."""
    if state is HEAD:
        return limits.header_timeout
    if state is QUEUED:
        return limits.queue_timeout
    if state is CONNECTING:
        return limits.connect_timeout
    if state is SENDING:
        return limits.client_timeout  # no body byte for this long: 408
    if state is AWAITING_HEAD or state is UPGRADING:
        return limits.upstream_timeout  # 504
    if state is RELAYING:
        # No response byte from the worker (or none taken by a slow client) for this long.
        return max(limits.upstream_timeout, limits.client_timeout)
    if state is TUNNEL:
        return limits.websocket_idle_timeout
    return None  # PIPELINED: bounded by the exchange ahead; DONE: nothing left to time


def buffer_bound(state: State, limits: Limits) -> int:
    """The most request or response bytes the proxy holds for an exchange in ``state`` before
    it stops reading the side that sends them."""
    if state is HEAD:
        return limits.max_header_size
    if state in (PIPELINED, QUEUED, CONNECTING):
        return limits.max_buffered_request  # shared by every request of the connection
    if state is UPGRADING:
        return limits.upgrade_hold
    if state is DONE:
        return 0
    return limits.write_high_water  # the socket written to pauses its reader past this


class Exchange:
    """One request on a client connection and the response to it."""

    __slots__ = ("state", "since", "request", "upstream", "conn", "pending", "pending_size",
                 "request_done", "body_received", "body_started", "tried", "stale", "started",
                 "framing", "set_cookie", "status", "counted", "retries", "affinity", "local",
                 "queued_at")

    def __init__(self, now: float) -> None:
        self.state = HEAD
        self.since = now  # when it entered its state, or last made progress in it
        self.request: Request | None = None
        self.upstream: Upstream | None = None
        # Its worker connection while it holds one: a ``contracts.WorkerLink`` (that module
        # imports this one, so the type is named in a comment).
        self.conn: Any = None
        # Tuples until something is held or fails: a list each would be allocated (and freed)
        # for every request, and nearly every request needs neither.
        self.pending: list[bytes] | tuple[bytes, ...] = ()  # request bytes (framed for the worker) not yet sent
        self.pending_size = 0
        self.request_done = False  # the whole request has been read from the client
        self.body_received = 0
        self.body_started = 0.0
        self.tried: tuple[Upstream, ...] = ()  # workers that failed it (not to be chosen again)
        self.stale: tuple[Upstream, ...] = ()  # workers whose pooled connection failed it
        self.started = 0.0
        self.framing = 0
        self.set_cookie: bytes | None = None
        self.status = 0
        self.counted = False  # counted in its upstream's active_requests
        self.retries = 0
        self.affinity: str | None = None  # the worker its cookie names, while it may wait for it
        self.local: object = None  # the built-in route that answers it
        self.queued_at = 0.0

    def move(self, target: State, now: float) -> None:
        if not _ALLOWED[self.state] >> target & 1:
            TABLE.move(self.state, target)  # raises InvalidTransition, naming both states
        self.state = target
        self.since = now

    @property
    def finished(self) -> bool:
        return self.state is DONE

    @property
    def responded(self) -> bool:
        """A response head (the worker's or the proxy's) has gone to the client."""
        state = self.state
        return state is RELAYING or state is TUNNEL or (state is DONE and self.status != 0)


__all__ = ["AWAITING_HEAD", "CONNECTING", "DONE", "HEAD", "PIPELINED", "QUEUED", "RELAYING", "SENDING",
           "TUNNEL", "UPGRADING", "Exchange", "InvalidTransition", "Limits", "ON_WORKER", "STREAMS_BODY", "State",
           "TABLE", "TRANSITIONS", "buffer_bound", "timeout_of"]
