"""The old master's side of ``fleet upgrade``: preflight, quiesce, write the state, ``execv``.

The master re-executes itself in place (same pid), as nginx's binary upgrade and gunicorn's
USR2 do, but without a second master: the workers, the watchdog and a managed proxy stay its
children (one process tree, nothing re-parented), so ``waitpid`` keeps working and no
``PR_SET_PDEATHSIG`` fires. The lifecycle (``PHASES``): IDLE -> PREFLIGHT -> QUIESCING ->
EXECUTING; back to IDLE when the new code fails its preflight (nothing was touched), when the
proxy cannot be quiesced (requests still in flight), or when ``execv`` itself fails (every
connection resumes).

If the new master fails after ``execv`` (the preflight should have caught it), it exits; the
kernel closes the watchdog's pipe with it and the watchdog kills every worker group, and
PDEATHSIG kills the workers: nothing is orphaned, but the fleet is down (systemd restarts it).
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fleet
from fleet.statetable import StateTable
from fleet.upgrade import preflight
from fleet.upgrade.quiesce import Quiesced, Refused, quiesce, resume
from fleet.upgrade.state import VERSION, TunnelRecord, UpgradeState, WatchdogRecord, WorkerRecord, dump

if TYPE_CHECKING:
    from fleet.balancer.server import Balancer

# runner.Master: typed loosely here, the runner imports this package (no import circle).
Master = Any
STATE_ENV = "FLEET_UPGRADE_STATE"  # the descriptor number of the state (a memfd) for the new master
RESULTS = ("done", "refused", "failed")
HELD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU})
CONTROL_WAIT = 2.0  # for control answers being written before the exec
QUIESCE_LIMIT = 30.0  # at most this long for in-flight requests (and --graceful-timeout)
HISTORY = 10


class Phase(enum.Enum):
    IDLE = "idle"
    PREFLIGHT = "preflight"
    QUIESCING = "quiescing"
    EXECUTING = "executing"


PHASES: StateTable[Phase] = StateTable("upgrade", {
    Phase.IDLE: {Phase.PREFLIGHT},
    Phase.PREFLIGHT: {Phase.IDLE, Phase.QUIESCING},
    Phase.QUIESCING: {Phase.IDLE, Phase.EXECUTING},
    Phase.EXECUTING: {Phase.IDLE},  # execv failed: serve on
})


class UpgradeError(RuntimeError):
    """The upgrade did not happen; the old fleet serves on. ``str()`` is for the operator."""


@dataclass
class Upgrades:
    """The phase, the count of each result (``fleet_upgrades_total``) and the last ones."""

    phase: Phase = Phase.IDLE
    counts: dict[str, int] = field(default_factory=lambda: {result: 0 for result in RESULTS})
    history: list[dict[str, Any]] = field(default_factory=list)
    code_started_at: float = field(default_factory=time.time)  # when this fleet code started

    def move(self, phase: Phase) -> None:
        self.phase = PHASES.move(self.phase, phase)

    def record(self, result: str, message: str, versions: tuple[str, str | None], now: float | None = None) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1
        entry = {"time": time.time() if now is None else now, "result": result, "from": versions[0],
                 "to": versions[1], "message": message}
        self.history = [*self.history, entry][-HISTORY:]

    def status(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "last": self.history[-1] if self.history else None,
                "history": self.history, "counts": dict(self.counts)}

    def as_data(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "history": list(self.history)}

    def restore(self, data: dict[str, Any]) -> None:
        for result, count in dict(data.get("counts", {})).items():
            self.counts[str(result)] = int(count)
        self.history = list(data.get("history", []))[-HISTORY:]


def command_line() -> list[str]:
    """The running ``fleet up``'s arguments (``up ...``), as the new master gets them again."""
    return list(sys.argv[1:])


def stats_data(balancer: "Balancer") -> dict[str, Any]:
    stats = balancer.stats
    return {
        "upstreams": {wid: {"requests": [[m, c, n] for (m, c), n in u.requests.items()],
                            "duration_counts": list(u.duration_counts), "duration_sum": u.duration_sum,
                            "connect_errors": u.connect_errors} for wid, u in stats.upstreams.items()},
        "retries": stats.retries, "client_errors": dict(stats.client_errors),
        "bytes_received": stats.bytes_received, "bytes_sent": stats.bytes_sent,
        "queue_wait_counts": list(stats.queue_wait_counts), "queue_wait_sum": stats.queue_wait_sum,
    }


def _workers(master: Master) -> list[WorkerRecord]:
    from fleet.supervisor.policy import WorkerState

    supervisor: Any = master.supervisor
    records = []
    for worker in supervisor._roster.all():
        proc = worker.proc
        beat = supervisor._liveness._files.get(worker.id)
        records.append(WorkerRecord(
            index=worker.index, generation=worker.generation, block=worker.block, port=worker.port,
            pid=proc.pid, started_at=worker.started_at, started_mono=worker.started_mono,
            ready_since=worker.ready_since, spawns=worker.spawns, planned_restarts=worker.planned_restarts,
            request_limit=worker.request_limit, output_fd=os.dup(proc.output_fd),
            heartbeat_fd=os.dup(beat.fd) if beat is not None and beat.fd >= 0 else None,
            draining=worker.state is WorkerState.DRAINING))
    return records


def refusal(master: Master) -> str | None:
    """Why an upgrade cannot start now (the state this release hands over has no place for it)."""
    from fleet.balancer.server import Balancer
    from fleet.supervisor.policy import WorkerState

    if master.stopping:
        return "fleet is stopping"
    if not isinstance(getattr(master.front, "proxy", None), Balancer):
        return ("fleet upgrade needs the built-in proxy in the master (not yet --proxy-processes N, "
                "--proxy nginx|haproxy or --no-proxy)")
    supervisor: Any = master.supervisor
    if supervisor is None or supervisor._ops.locked() or master._reloading.locked():
        return "a reload, scale or recycle is in progress; try again when it is done"
    roster = supervisor._roster
    for worker in roster.all():
        serving = worker.state is WorkerState.READY and roster.is_current(worker)
        draining = worker.state is WorkerState.DRAINING and worker.id in roster.replaced
        if not (serving or draining) or worker.proc is None:
            return (f"worker {worker.id} is {worker.state.value}; an upgrade adopts ready and draining "
                    f"workers only: try again once `fleet status` shows none starting or stopping")
    return None


def pending_changes(master: Master) -> str | None:
    """The new master builds its configuration from the same sources as a start: they must
    give the running configuration, or it would run with settings nobody applied."""
    from fleet.config import ConfigError
    from fleet.reloading import prepare

    try:
        plan = prepare(master.config_reloads.source, master.config)
    except ConfigError as exc:
        return f"the configuration is invalid now, nothing changed: {exc}"
    if not plan.changes:
        return None
    advice = ("restore them or restart fleet (fleet down; fleet up)" if plan.refused
              else "apply them with `fleet reload` first")
    return f"the configuration differs from the running one ({'; '.join(plan.lines())}): {advice}"


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("fleet-upgrade-state", 0)  # inheritable: no MFD_CLOEXEC
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


async def check(master: Master) -> preflight.Verdict:
    """Whether an upgrade may start, and the new code's preflight; ``UpgradeError`` (counted,
    nothing touched) if not."""
    upgrades: Upgrades = master.upgrades
    old = fleet.__version__
    reason = refusal(master) or pending_changes(master)
    if reason is not None or upgrades.phase is not Phase.IDLE:
        reason = reason or f"an upgrade is already under way ({upgrades.phase.value})"
        upgrades.record("refused", reason, (old, None))
        raise UpgradeError(reason)
    upgrades.move(Phase.PREFLIGHT)
    master.output.fleet(f"upgrade: checking the installed fleet (running {old})")
    try:
        verdict = await preflight.run(command_line(), VERSION)
    except BaseException:
        upgrades.move(Phase.IDLE)
        raise
    reason = None if verdict.ok else (f"the installed fleet cannot start; the running fleet {old} serves on:\n"
                                      f"{verdict.output.rstrip()}")
    reason = reason or refusal(master)  # a reload may have begun meanwhile
    if reason is not None:
        upgrades.move(Phase.IDLE)
        upgrades.record("refused", reason, (old, verdict.version))
        master.output.fleet(f"upgrade refused: {reason}")
        raise UpgradeError(reason)
    return verdict


async def handover(master: Master, verdict: preflight.Verdict) -> None:
    """Quiesce, write the state, execv; returns only when the upgrade did not happen (the
    reason is recorded and logged; the old fleet serves on)."""
    upgrades: Upgrades = master.upgrades
    old = fleet.__version__
    upgrades.move(Phase.QUIESCING)
    master.output.fleet(f"upgrade: {old} -> {verdict.version}: handing over")
    balancer: Any = master.front.proxy  # type: ignore[attr-defined]
    control = master.control
    if control is not None:
        await control.pause(CONTROL_WAIT)  # an answer being written is sent first
    try:
        quiet = await quiesce(balancer, min(QUIESCE_LIMIT, master.config.graceful_timeout))
    except Refused as exc:
        if control is not None:
            control.resume()
        upgrades.move(Phase.IDLE)
        upgrades.record("refused", str(exc), (old, verdict.version))
        master.output.fleet(f"upgrade refused: {exc}")
        return
    if quiet.closed_tunnels or quiet.closed_clients:
        master.output.fleet(f"upgrade: {quiet.closed_tunnels} WebSocket(s) closed (TLS, or a peer that did not "
                            f"read) and {quiet.closed_clients} idle TLS connection(s) closed between requests")
    if master.stopping:  # a stop came meanwhile: it wins
        resume(balancer, quiet)
        upgrades.move(Phase.IDLE)
        upgrades.record("refused", "fleet is stopping", (old, verdict.version))
        return
    upgrades.move(Phase.EXECUTING)
    state = _state(master, quiet, balancer)
    error = _exec(state)
    # Only reached when execv failed: serve on, as before.
    for fd in state.fds():
        if fd not in quiet.fds():
            os.close(fd)
    resume(balancer, quiet)
    if control is not None:
        control.resume()
    upgrades.move(Phase.IDLE)
    message = f"cannot execute the new fleet: {error}; the running fleet {old} serves on"
    upgrades.record("failed", message, (old, verdict.version))
    master.output.fleet(f"upgrade failed: {message}")


def _state(master: Master, quiet: Quiesced, balancer: "Balancer") -> UpgradeState:
    supervisor: Any = master.supervisor
    watchdog = supervisor._watchdog
    watchdog_record = None
    if watchdog is not None and watchdog._proc.stdin is not None and not watchdog._broken:
        watchdog._proc.stdin.flush()
        watchdog_record = WatchdogRecord(watchdog.pid, os.dup(watchdog._proc.stdin.fileno()), watchdog.token)
    control = master.control
    reloads = master.config_reloads
    return UpgradeState(
        written_by=fleet.__version__, written_at=time.time(),
        fleet_started_at=master.fleet_started_at, listener_fds=quiet.listeners,
        control_fd=control.listener_fd() if control is not None else None,
        watchdog=watchdog_record, generation=supervisor.generation, desired=supervisor.desired,
        workers=_workers(master),
        tunnels=[TunnelRecord(wid, c, w, time.time()) for wid, c, w in quiet.tunnels],
        client_fds=quiet.clients, stats=stats_data(balancer), recycles=dict(supervisor.recycles),
        config_reloads={"counts": dict(reloads.counts), "last": reloads.last},
        upgrades=master.upgrades.as_data(),
        bokeh_environment=[list(pair) for pair in master.config.bokeh_environment],
        last_reload=supervisor.last_reload,
    )


def _exec(state: UpgradeState) -> str:
    """execve the installed fleet with the same command line; returns the error if it failed."""
    fd = _memfd(dump(state))
    for kept in state.fds():
        os.set_inheritable(kept, True)
    argv = [sys.executable, "-m", "fleet", *command_line()]
    env = {**os.environ, STATE_ENV: str(fd)}
    sys.stdout.flush()
    sys.stderr.flush()
    # A signal during the exec would meet the default action (HUP, TERM, USR2: terminate): it
    # stays pending instead (the mask survives execve) until the new master has its handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
        os.close(fd)
        return str(exc)
    return "execve returned"  # never: execve does not return on success


__all__ = ["Phase", "PHASES", "RESULTS", "STATE_ENV", "UpgradeError", "Upgrades", "check", "handover", "refusal"]
