"""The managed front: nginx or HAProxy run by fleet (``--proxy nginx|haproxy``), as
``fleet.dataplane.DataPlane`` drives it, seen by the master as an ``interface.Front``.

Unlike the built-in proxy it starts in two steps: ``start`` checks everything that can be
checked before a worker runs (binary, refused options, port free, ``nginx -t``), ``serve``
starts the server in front of the ready workers, owned like a worker (reaper, watchdog).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from fleet.config import Config
from fleet.dataplane.files import DataPlaneError
from fleet.dataplane.plane import DataPlane
from fleet.front.interface import Crew, FrontError, RouteHandler
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.policy import WorkerState
from fleet.supervisor.process import Output


class ManagedFront:
    routes = True
    port = None  # nginx/HAProxy listen, not fleet
    redirect_port = None
    stats = None  # the server counts, fleet does not

    def __init__(self, config: Config, control_path: str, output: Output) -> None:
        self.config = config
        self.control_path = control_path
        self.output = output
        self.plane: DataPlane | None = None
        self._crew: Crew | None = None
        self._slots: dict[str, str] = {}  # worker id -> its metrics label (slot)
        self._closed = False

    def banner(self) -> list[str]:
        return []

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        try:  # binary, refused options, port, `nginx -t`: before any worker runs
            self.plane = await DataPlane.prepare(self.config, self.control_path, self.output)
        except DataPlaneError as exc:
            raise FrontError(str(exc)) from None

    def attach(self, crew: Crew) -> None:
        self._crew = crew

    async def serve(self) -> None:
        """Start the server in front of the ready workers; nothing keeps running if it cannot."""
        plane, crew = self.plane, self._crew
        assert plane is not None and crew is not None
        try:
            await plane.start(crew.family)
        except (DataPlaneError, OSError) as exc:
            await self.close()  # before the supervisor closes the watchdog it uses
            raise FrontError(str(exc)) from None
        assert plane.server is not None
        self.output.fleet(f"data plane: {plane.kind} (pid {plane.server.pid}), files in {plane.layout.directory}")

    async def stop_accepting(self) -> None:
        """The server stops accepting as part of its graceful stop (``drain``)."""

    async def drain(self, timeout: float) -> None:
        """Graceful: the server stops listening and finishes in-flight requests (up to timeout)."""
        if self.plane is not None:
            await self.plane.stop(timeout)

    async def close(self) -> None:
        if self.plane is not None and not self._closed:
            self._closed = True
            await self.plane.stop(0.0)

    # -- workers ---------------------------------------------------------------------------------
    def worker_changed(self, info: WorkerInfo) -> None:
        if self.plane is not None:
            self.plane.on_worker(info)
        if info.state in (WorkerState.STOPPED, WorkerState.FAILED):
            self._slots.pop(info.id, None)
        else:
            self._slots[info.id] = info.slot

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        if self.plane is None:
            return True
        return await self.plane.wait_idle(worker_id, timeout)

    def slot_of(self, worker_id: str) -> str:
        return self._slots.get(worker_id, worker_id)

    def check_scale(self, workers: int) -> str | None:
        return self.plane.check_scale(workers) if self.plane is not None else None

    async def settle(self) -> None:
        """Each change is sent to the server as it happens."""

    # -- what the front serves itself ------------------------------------------------------------
    def add_local_route(self, path: str, handler: RouteHandler, headers: Iterable[tuple[str, str]] = ()) -> None:
        assert self.plane is not None, "routes are added once the front started"
        self.plane.add_local_route(path, handler, headers)

    def serve_static(self, roots: Callable[[], list[Any]]) -> None:
        """nginx/HAProxy forward every path to the workers."""

    def reload_tls(self) -> str | None:
        return None

    async def check(self, config: Config) -> str | None:
        """``nginx -t`` / ``haproxy -c`` of the configuration a reload would give the server."""
        return await self.plane.check(config) if self.plane is not None else None

    async def apply(self, config: Config) -> str | None:
        """The server's configuration regenerated, checked and reloaded gracefully (the plane)."""
        self.config = config
        return await self.plane.apply(config) if self.plane is not None else None

    # -- reports ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        assert self.plane is not None
        return self.plane.status()

    def proxies(self) -> list[dict[str, Any]] | None:
        return None


__all__ = ["ManagedFront"]
