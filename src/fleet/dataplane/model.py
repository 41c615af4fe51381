"""What the data plane should do with each port slot, decided without any I/O.

The supervisor reports worker states (``WorkerInfo``); ``PlaneModel`` turns them into one
``ServerState`` per port slot (``w<i>`` in the ``--base-port`` block, ``s<i>`` in the surge
block, the same names as fleet's metrics ``worker`` label):

    OFF       no worker, or its worker is not ready (starting, crashed, stopping)
    READY     takes new requests
    DRAINING  replaced: no new clients; with HAProxy, clients pinned by the cookie still reach it

HAProxy gets every slot in its configuration and an admin state per slot (``maint``,
``ready``, ``drain``) through its runtime API; nginx gets only the slots it may send to and a
graceful reload whenever that list changes. A slot's state changes only through
``SERVER_STATES`` (``fleet.statetable``). Also here: the options a server cannot honour, and
HAProxy's ``show stat`` CSV.
"""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import dataclass

from fleet.config import Config, option_fields
from fleet.configgen.common import Upstream
from fleet.statetable import StateTable
from fleet.supervisor.generations import slot_label
from fleet.supervisor.policy import WorkerState

# Slots per port block configured in HAProxy beyond -n: room for `fleet scale` without a
# restart (HAProxy 2.6 refuses `cookie` on servers added at run time, so affinity needs
# servers declared in the file). Scaling past it is refused with a clear message.
MIN_SLOTS = 16


class ServerState(enum.Enum):
    OFF = "maint"
    READY = "ready"
    DRAINING = "drain"


_V = ServerState
# A slot follows its worker: READY -> DRAINING once replaced, OFF whenever nothing may reach it.
# A draining worker is never ready again, and a new worker takes the slot only after the old
# one stopped (its port), which set the slot OFF first. Staying put is no move (``_set``).
SERVER_STATES: StateTable[ServerState] = StateTable("data-plane server", {
    _V.OFF: {_V.READY, _V.DRAINING},
    _V.READY: {_V.OFF, _V.DRAINING},
    _V.DRAINING: {_V.OFF},
})


@dataclass
class Slot:
    name: str
    port: int
    worker_id: str | None = None
    state: ServerState = ServerState.OFF
    served: bool = False  # its worker has been ready: nginx keeps it listed while it restarts


def _set(slot: Slot, state: ServerState) -> None:
    if slot.state is not state:
        slot.state = SERVER_STATES.move(slot.state, state)


def slot_count(workers: int) -> int:
    return max(MIN_SLOTS, 2 * workers)


class PlaneModel:
    """The slots of one fleet and what each should do; fed by worker state changes."""

    def __init__(self, config: Config) -> None:
        count = slot_count(config.workers)
        self.capacity = count
        self.slots: dict[str, Slot] = {}
        for block in (0, 1):
            for index in range(count):
                name = slot_label(block, index)
                self.slots[name] = Slot(name, config.worker_port(index, block))

    def update(self, worker_id: str, slot: str, state: WorkerState | str) -> bool:
        """A worker's state changed; True if the data plane must change."""
        entry = self.slots.get(slot)
        if entry is None:
            return False
        state = WorkerState(state)
        before = (entry.worker_id, entry.state, entry.served)
        if state in (WorkerState.STOPPED, WorkerState.FAILED):
            if entry.worker_id == worker_id:
                _set(entry, ServerState.OFF)
                entry.worker_id, entry.served = None, False
            return before != (entry.worker_id, entry.state, entry.served)
        if entry.worker_id != worker_id:
            entry.worker_id, entry.served = worker_id, False
        if state is WorkerState.READY:
            _set(entry, ServerState.READY)
            entry.served = True
        elif state is WorkerState.DRAINING:
            _set(entry, ServerState.DRAINING)
        else:  # starting, stopping, exited, backoff: nothing may reach it now
            _set(entry, ServerState.OFF)
        return before != (entry.worker_id, entry.state, entry.served)

    def slot_of(self, worker_id: str) -> Slot | None:
        return next((s for s in self.slots.values() if s.worker_id == worker_id), None)

    def haproxy_servers(self) -> tuple[Upstream, ...]:
        """Every slot; only READY and DRAINING ones enabled (drain is set through the API)."""
        return tuple(Upstream(s.name, "127.0.0.1", s.port, disabled=s.state is ServerState.OFF)
                     for s in self.slots.values())

    def nginx_servers(self) -> tuple[Upstream, ...]:
        """The slots nginx may send new requests to: ready, or serving and restarting after a
        crash (nginx's own failure handling skips it meanwhile; no reload for a crash)."""
        return tuple(Upstream(s.name, "127.0.0.1", s.port) for s in self.slots.values()
                     if s.worker_id is not None and s.served and s.state is not ServerState.DRAINING)


# -- options the server cannot honour ------------------------------------------------------

# Enforced only by fleet's built-in proxy. A value other than the default is an error (the user
# asked for it); at the default it is a documented difference (README "Managed data plane").
_BUILTIN_ONLY = {
    "max_trailer_size": "the built-in proxy's trailer limit",
    "max_buffered_request": "the built-in proxy's request buffer bound",
    "min_body_rate": "the built-in proxy's slow-body cut-off",
    "max_requests": "counting each worker's requests (use --max-age or --max-memory)",
}
_NOT_NGINX = {
    "max_header_count": "a header-count limit",
    "queue_timeout": "a request queue (a busy nginx answers 502 at once)",
    "websocket_idle_timeout": "a separate WebSocket idle timeout (it uses --upstream-timeout)",
}


def refusals(config: Config) -> list[str]:
    """Options given that ``config.proxy`` cannot honour: each an error message."""
    kind = config.proxy
    if kind == "builtin":
        return []
    defaults = {f.name: f.default for f in option_fields()}
    rules = dict(_BUILTIN_ONLY)
    if kind == "nginx":
        rules.update(_NOT_NGINX)
    errors = []
    for name, what in rules.items():
        if getattr(config, name) != defaults[name]:
            flag = "--" + name.replace("_", "-")
            errors.append(f"--proxy {kind} cannot honour {flag}: {kind} has no {what}; "
                          f"drop {flag} or use --proxy builtin")
    if config.ssl_password is not None:
        errors.append(f"--proxy {kind}: an encrypted TLS key (FLEET_SSL_PASSWORD) would have to be "
                      f"written to a file for {kind}; use an unencrypted key readable only by you")
    return errors


def downgrades(config: Config) -> list[str]:
    """What ``config.proxy`` does differently at these settings: said once at start."""
    if config.proxy != "nginx":
        return []
    notes = ["nginx: no per-worker drain state, counts or queue: a replaced worker is stopped once "
             "the nginx workers that could still use it have exited (or --drain-timeout)"]
    if config.sticky:
        notes.append("nginx: --sticky dropped (open-source nginx has no affinity cookie; a Bokeh "
                     "page and its WebSocket may land on different workers); use --proxy haproxy "
                     "or --no-sticky")
    return notes


# -- HAProxy runtime API -------------------------------------------------------------------

BACKEND = "fleet_workers"


def state_command(slot: str, state: ServerState) -> str:
    return f"set server {BACKEND}/{slot} state {state.value}"


@dataclass(frozen=True)
class ServerLoad:
    sessions: int  # scur: requests in flight and open tunnels (WebSockets)
    queued: int  # qcur
    status: str


def parse_stat(text: str) -> dict[str, ServerLoad]:
    """``show stat`` CSV -> per-server load of the fleet backend."""
    lines = text.lstrip("# ").splitlines()
    result: dict[str, ServerLoad] = {}
    for row in csv.DictReader(io.StringIO("\n".join(line for line in lines if line.strip()))):
        if row.get("pxname") != BACKEND or row.get("svname") in (None, "BACKEND", "FRONTEND"):
            continue
        result[row["svname"]] = ServerLoad(int(row.get("scur") or 0), int(row.get("qcur") or 0),
                                           row.get("status") or "")
    return result
