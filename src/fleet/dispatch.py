"""What ``fleet status/reload/scale/down`` do in a running ``fleet up``: the control socket's
commands dispatched to the supervisor, and the status reply.

The control socket (``fleet.control``) only parses and frames; the master owns the event loop
and the stop. This module sits between: it turns a command into supervisor calls and a reply.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from fleet import __version__
from fleet.appspec import broken_apps
from fleet.control import ControlError
from fleet.supervisor.manager import SupervisorError
from fleet.supervisor.usage import tree_cpu_percent, tree_rss

if TYPE_CHECKING:
    from fleet.config.sections import WorkerSettings
    from fleet.front.interface import Front
    from fleet.reloading import ConfigReloads
    from fleet.supervisor.manager import Supervisor
    from fleet.upgrade.handover import Upgrades


class Steerable(Protocol):
    """What the commands need from the running fleet (``runner.Master`` is one)."""

    front: "Front"
    supervisor: "Supervisor | None"
    stopping: bool
    config_reloads: "ConfigReloads"
    upgrades: "Upgrades"
    fleet_started_at: float

    @property
    def worker_settings(self) -> "WorkerSettings": ...

    async def reload(self) -> str: ...

    async def scale(self, workers: int) -> str: ...

    async def upgrade_checked(self) -> str: ...

    def request_stop(self) -> None: ...

    def public_url(self) -> str: ...


class ControlDispatch:
    def __init__(self, master: Steerable) -> None:
        self._master = master

    async def __call__(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        master = self._master
        if command == "status":
            return await self.status()
        if master.stopping:
            raise ControlError("fleet is stopping")
        if command == "reload":
            try:
                return {"ok": True, "message": await master.reload()}
            except SupervisorError as exc:
                raise ControlError(str(exc)) from None
        if command == "scale":
            try:
                workers = int(args["workers"])
            except (KeyError, TypeError, ValueError):
                raise ControlError("scale needs workers: N") from None
            try:
                return {"ok": True, "message": await master.scale(workers)}
            except SupervisorError as exc:
                raise ControlError(str(exc)) from None
        if command == "upgrade":
            from fleet.upgrade.handover import UpgradeError

            requested_at = time.time()
            try:
                message = await master.upgrade_checked()
            except UpgradeError as exc:
                raise ControlError(str(exc)) from None
            return {"ok": True, "message": message, "requested_at": requested_at}
        if command == "down":
            master.request_stop()
            return {"ok": True, "message": f"stopping fleet (pid {os.getpid()})"}
        raise ControlError(f"unknown command {command!r} (status, reload, scale, upgrade, down)")

    async def status(self) -> dict[str, Any]:
        master = self._master
        supervisor = master.supervisor
        assert supervisor is not None
        front, what = master.front, master.worker_settings
        infos = supervisor.workers()
        pids = [info.pid for info in infos if info.pid is not None]
        cpu = await tree_cpu_percent(pids)
        workers = []
        for info in infos:
            row: dict[str, Any] = {
                "id": info.id, "index": info.index, "generation": info.generation, "slot": info.slot,
                "pid": info.pid, "port": info.port, "state": info.state, "current": info.current,
                "started_at": info.started_at, "restarts": info.restarts,
                "crash_looping": info.crash_looping, "last_exit": info.last_exit,
                "next_start_at": info.next_start_at,
                "uptime": (time.time() - info.started_at) if info.started_at else None,
                "connections": None, "requests": None, "cpu_percent": None, "rss": None,
            }
            if front.stats is not None:
                upstream = front.stats.upstreams.get(info.id)
                # In-flight HTTP requests plus open WebSockets: what a draining worker has left.
                row["connections"] = upstream.active_requests + upstream.websockets if upstream else 0
                row["requests"] = upstream.requests_total if upstream else 0
            if info.pid is not None:
                row["cpu_percent"] = round(cpu.get(info.pid, 0.0), 1)
                row["rss"] = tree_rss(info.pid)
            workers.append(row)
        return {
            "ok": True, "pid": os.getpid(), "time": time.time(), "version": __version__,
            "app": what.cmd and f"--cmd {what.cmd}" or " ".join(what.apps()),
            "desired": supervisor.desired,
            "generation": supervisor.generation,
            "last_reload": supervisor.last_reload,
            "recycles": dict(supervisor.recycles),
            "proxy": master.public_url() if front.routes else None,
            "data_plane": front.status(),
            "workers": workers,
            "broken_apps": broken_apps(master.specs),  # Bokeh apps whose files do not compile now
            # --proxy-processes N: each proxy process (balancer.group); absent with one.
            "proxies": front.proxies(),
            # Where the configuration comes from and the last reload of it (fleet.reloading).
            "config": master.config_reloads.status(),
            "acme": master.acme.status() if getattr(master, "acme", None) is not None else None,  # --domain
            # This fleet code's start (a fleet upgrade renews it), the fleet's first start, and
            # the last upgrades (fleet.upgrade).
            "started_at": master.upgrades.code_started_at,
            "fleet_started_at": master.fleet_started_at,
            "upgrade": master.upgrades.status(),
        }
