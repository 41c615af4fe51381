"""The built-in front: fleet's own proxy (``fleet.balancer``), one ``Balancer`` in the master or,
with ``--proxy-processes N``, a ``ProxyGroup`` of N proxy processes. Both have the same verbs;
this module is the glue between them and the master (``interface.Front``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from fleet.balancer.group import ProxyGroup
from fleet.balancer.hotpath import hot_path_line
from fleet.balancer.server import Balancer
from fleet.balancer.stats import ProxyStats
from fleet.balancer.settings import ProxyViews
from fleet.cpulimit import proxy_processes
from fleet.front.interface import Crew, FrontError, RouteHandler
from fleet.ports import PortInUseError
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.policy import WorkerState

if TYPE_CHECKING:
    from fleet.config import Config


class BuiltinFront:
    """Every worker is an upstream of the proxy, from its first change to its removal."""

    routes = True

    def __init__(self, views: ProxyViews, say: Callable[[str], None]) -> None:
        self.views = views
        self._stats = ProxyStats()
        processes = proxy_processes(views.frontend.proxy_processes, "up")
        self.proxy: Balancer | ProxyGroup = (ProxyGroup(views, processes, self._stats, say) if processes > 1
                                             else Balancer(views, self._stats))
        self._upstreams: set[str] = set()
        self._slots: dict[str, str] = {}  # worker id -> its metrics label (slot)
        self._stopping = False
        self._closed = False

    @property
    def port(self) -> int | None:
        return self.proxy.port

    @property
    def redirect_port(self) -> int | None:
        return self.proxy.redirect_port

    @property
    def stats(self) -> ProxyStats:
        return self._stats

    def banner(self) -> list[str]:
        return [hot_path_line()]

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind now: a taken port fails before any worker runs."""
        where = self.views.frontend
        try:
            await self.proxy.start()
        except PortInUseError as exc:
            await self.close()
            raise FrontError(f"proxy {exc}") from None
        except OSError as exc:
            await self.close()
            raise FrontError(f"cannot listen on {where.address}:{where.port}: {exc.strerror or exc}") from None

    def attach(self, crew: Crew) -> None:
        if isinstance(self.proxy, ProxyGroup):  # the reaper leaves proxy processes alone
            self.proxy.declare(crew.helper_spawning, crew.own_helper)

    async def serve(self) -> None:
        """Serving since ``start``: a worker takes requests once it is ready."""

    async def stop_accepting(self) -> None:
        self._stopping = True
        await self.proxy.stop_accepting()

    async def drain(self, timeout: float) -> None:
        await self.proxy.drain(timeout)

    async def close(self) -> None:
        self._stopping = True
        if not self._closed:
            self._closed = True
            await self.proxy.close()

    # -- workers ---------------------------------------------------------------------------------
    def worker_changed(self, info: WorkerInfo) -> None:
        proxy = self.proxy
        if info.state in (WorkerState.STOPPED, WorkerState.FAILED):
            # While fleet stops, the upstreams stay until the proxy closes.
            if info.id in self._upstreams and not self._stopping:
                proxy.remove_upstream(info.id)
                self._upstreams.discard(info.id)
                # Forget a removed worker: its counters would otherwise be exported forever.
                self._stats.upstreams.pop(info.id, None)
                self._slots.pop(info.id, None)
            return
        self._slots[info.id] = info.slot
        if info.id not in self._upstreams:
            proxy.add_upstream(info.id, "127.0.0.1", info.port, ready=info.ready)
            self._upstreams.add(info.id)
        elif info.state is WorkerState.DRAINING:
            proxy.set_draining(info.id)
        else:
            proxy.set_ready(info.id, info.ready)

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        return await self.proxy.wait_idle(worker_id, timeout)

    def slot_of(self, worker_id: str) -> str:
        return self._slots.get(worker_id, worker_id)

    def check_scale(self, workers: int) -> str | None:
        return None

    async def settle(self) -> None:
        """--proxy-processes N: every proxy process knows the routing once this returns."""
        if isinstance(self.proxy, ProxyGroup):
            await self.proxy.settle()

    # -- what the proxy serves itself ------------------------------------------------------------
    def add_local_route(self, path: str, handler: RouteHandler, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.proxy.add_local_route(path, handler, headers)

    def serve_static(self, roots: Callable[[], list[Any]]) -> None:
        self.proxy.serve_bokeh(roots())

    def reload_tls(self) -> str | None:
        return self.proxy.reload_tls()

    async def check(self, config: "Config") -> str | None:
        """Nothing beyond fleet's own validation."""
        return None

    async def apply(self, config: "Config") -> str | None:
        """The proxy's views of the reloaded config (the front's one interface takes the whole
        Config: a managed front renders all of it)."""
        self.views = ProxyViews.of(config)
        if isinstance(self.proxy, ProxyGroup):
            await self.proxy.apply(self.views)  # every proxy process has it once this returns
            return f"applied in {len(self.proxy.slots)} proxy processes"
        self.proxy.apply(self.views)
        return None

    # -- reports ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"kind": "builtin"}

    def proxies(self) -> list[dict[str, Any]] | None:
        return self.proxy.processes() if isinstance(self.proxy, ProxyGroup) else None


__all__ = ["BuiltinFront"]
