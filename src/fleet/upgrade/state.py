"""The state one fleet master hands to the next across ``execv`` (format documented in
docs/upgrade-state.md). Pure: dictionaries in, dataclasses out, no descriptors touched.

Compatibility rule: a release reads the format of the release before it. ``load`` accepts every
version in ``READABLE``; a field added later gets a default here, so an older state still loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "fleet-upgrade-state"
VERSION = 1
READABLE = frozenset({1})
MAX_STATE_BYTES = 64 * 1024 * 1024  # a state past this is refused, not read into memory


class StateError(ValueError):
    """A state this release cannot read; the message says why."""


@dataclass(frozen=True)
class WorkerRecord:
    index: int
    generation: int
    block: int
    port: int
    pid: int
    started_at: float  # wall clock
    started_mono: float  # CLOCK_MONOTONIC is system-wide: it survives execv
    ready_since: float | None
    spawns: int
    planned_restarts: int
    request_limit: int
    output_fd: int  # read end of the worker's stdout/stderr pipe
    heartbeat_fd: int | None  # --worker-timeout heartbeat file, when the worker beats
    draining: bool = False  # replaced by a reload or recycle, draining (its drain starts again)


@dataclass(frozen=True)
class TunnelRecord:
    worker_id: str
    client_fd: int
    worker_fd: int
    opened_at: float  # wall clock: when the tunnel was handed over the first time (or opened)


@dataclass(frozen=True)
class WatchdogRecord:
    pid: int
    fd: int  # write end of its stdin pipe: end of file there kills every worker group
    token: str  # FLEET_FAMILY of the workers


@dataclass
class UpgradeState:
    written_by: str  # fleet version of the master that wrote it
    written_at: float
    fleet_started_at: float  # when this fleet (not this code) started
    listener_fds: list[int]
    control_fd: int | None
    watchdog: WatchdogRecord | None
    generation: int
    desired: int
    workers: list[WorkerRecord]
    tunnels: list[TunnelRecord] = field(default_factory=list)
    client_fds: list[int] = field(default_factory=list)  # idle keep-alive clients, between requests
    stats: dict[str, Any] = field(default_factory=dict)  # balancer.stats.ProxyStats as data
    recycles: dict[str, int] = field(default_factory=dict)
    config_reloads: dict[str, Any] = field(default_factory=dict)  # counts, last
    upgrades: dict[str, Any] = field(default_factory=dict)  # counts, last
    bokeh_environment: list[list[str]] = field(default_factory=list)  # this run's made secrets
    last_reload: dict[str, Any] | None = None  # the supervisor's last generation reload
    version: int = VERSION

    def fds(self) -> list[int]:
        """Every descriptor the state names: they must survive execv."""
        found = [*self.listener_fds, *self.client_fds]
        if self.control_fd is not None:
            found.append(self.control_fd)
        if self.watchdog is not None:
            found.append(self.watchdog.fd)
        for worker in self.workers:
            found.append(worker.output_fd)
            if worker.heartbeat_fd is not None:
                found.append(worker.heartbeat_fd)
        for tunnel in self.tunnels:
            found += [tunnel.client_fd, tunnel.worker_fd]
        return found


def dump(state: UpgradeState) -> bytes:
    data = asdict(state)
    data["format"] = FORMAT
    return json.dumps(data, sort_keys=True).encode()


def _need(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise StateError(f"upgrade state: {name} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def load(raw: bytes) -> UpgradeState:
    """Read a state written by this release or the one before; ``StateError`` otherwise."""
    if len(raw) > MAX_STATE_BYTES:
        raise StateError(f"upgrade state is {len(raw)} bytes, past {MAX_STATE_BYTES}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StateError(f"upgrade state is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateError("upgrade state: not a fleet upgrade state")
    version = data.get("version")
    if version not in READABLE:
        raise StateError(f"upgrade state version {version!r} is not readable by this fleet "
                         f"(reads {', '.join(map(str, sorted(READABLE)))})")
    try:
        workers = [WorkerRecord(**w) for w in _need(data, "workers", list)]
        tunnels = [TunnelRecord(**t) for t in data.get("tunnels", [])]
        watchdog = data.get("watchdog")
        return UpgradeState(
            written_by=str(_need(data, "written_by", str)), written_at=float(_need(data, "written_at", (int, float))),
            fleet_started_at=float(_need(data, "fleet_started_at", (int, float))),
            listener_fds=[int(fd) for fd in _need(data, "listener_fds", list)],
            control_fd=data.get("control_fd"),
            watchdog=WatchdogRecord(**watchdog) if watchdog is not None else None,
            generation=int(_need(data, "generation", int)), desired=int(_need(data, "desired", int)),
            workers=workers, tunnels=tunnels,
            client_fds=[int(fd) for fd in data.get("client_fds", [])],
            stats=dict(data.get("stats", {})), recycles=dict(data.get("recycles", {})),
            config_reloads=dict(data.get("config_reloads", {})), upgrades=dict(data.get("upgrades", {})),
            bokeh_environment=[list(pair) for pair in data.get("bokeh_environment", [])],
            last_reload=data.get("last_reload"),
            version=VERSION,
        )
    except TypeError as exc:  # a record with a missing or unknown field
        raise StateError(f"upgrade state: {exc}") from None


__all__ = ["FORMAT", "VERSION", "READABLE", "StateError", "UpgradeState", "WorkerRecord", "TunnelRecord",
           "WatchdogRecord", "dump", "load"]
