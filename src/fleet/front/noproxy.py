"""No front (``--no-proxy``): clients talk to the workers' ports themselves. Nothing routes
through fleet, so a worker has nothing to drain and a reload restarts each worker in place;
fleet's own routes are served by the ``--metrics-port`` listener only.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from fleet.front.interface import Crew, RouteHandler
from fleet.supervisor.info import WorkerInfo


class NoFront:
    routes = False
    port = None
    redirect_port = None
    stats = None

    def banner(self) -> list[str]:
        return []

    async def start(self) -> None:
        """Nothing to bind: the workers' ports are checked by the supervisor."""

    def attach(self, crew: Crew) -> None:
        """No process of its own to declare."""

    async def serve(self) -> None:
        """The workers serve by themselves."""

    async def stop_accepting(self) -> None:
        """Nothing listens here."""

    async def drain(self, timeout: float) -> None:
        """Nothing in flight here."""

    async def close(self) -> None:
        """Nothing to release."""

    def worker_changed(self, info: WorkerInfo) -> None:
        """Nothing routes to the workers."""

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        return True  # not asked: ``routes`` is False

    def slot_of(self, worker_id: str) -> str:
        return worker_id

    def check_scale(self, workers: int) -> str | None:
        return None

    async def settle(self) -> None:
        """No routing to settle."""

    def add_local_route(self, path: str, handler: RouteHandler, headers: Iterable[tuple[str, str]] = ()) -> None:
        """No proxy port to answer on (``--metrics-port`` serves fleet's routes)."""

    def serve_static(self, roots: Callable[[], list[Any]]) -> None:
        """The workers serve their files."""

    def reload_tls(self) -> str | None:
        return None

    async def check(self, config: Any) -> str | None:
        """Nothing beyond fleet's own validation."""
        return None

    async def apply(self, config: Any) -> str | None:
        """No proxy: the workers get their settings from the new generation."""
        return None

    def status(self) -> dict[str, Any]:
        return {"kind": "none"}

    def proxies(self) -> list[dict[str, Any]] | None:
        return None


__all__ = ["NoFront"]
