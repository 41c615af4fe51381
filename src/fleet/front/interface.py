"""The contract between the master and its front end (``Front``), and what a front needs from
the supervisor (``Crew``). The master holds one ``Front`` and never asks which kind it is.

Lifecycle, in the master's order:

    start()                 before any worker: bind (a taken port fails here); on failure
                            nothing is left behind and ``FrontError`` says why
    attach(crew)            the supervisor exists (not started): whom the front's processes
                            belong to
    serve()                 the workers are ready; a front that waited for them starts now
                            (``FrontError``: it cleaned up after itself)
    worker_changed(info)    every worker change, from start to stop
    stop_accepting(), drain(timeout)
                            a graceful stop, before the workers stop
    close()                 releases everything; safe at any point and more than once. A stop
                            at once (or a failed start) closes the front before the workers are
                            killed: a managed server is one of the supervisor's children.

Imports nothing of the fronts, nor of the master: both sides import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol

if TYPE_CHECKING:
    from fleet.balancer.stats import ProxyStats
    from fleet.supervisor.info import WorkerInfo

RouteHandler = Callable[[], tuple[int, str, bytes]]  # a built-in route's answer: status, type, body
WaitIdle = Callable[[str, "float | None"], Awaitable[bool]]


class FrontError(Exception):
    """The front cannot start or serve; the message is for the user."""


class Crew(Protocol):
    """What a front needs from the supervisor: its processes are owned like workers."""

    @property
    def family(self) -> tuple[Any, Any]:
        """The reaper and the orphan watchdog (set once the supervisor started)."""
        ...

    def helper_spawning(self) -> Any: ...

    def own_helper(self, pid: int) -> None: ...


class Front(Protocol):
    """One front end of ``fleet up``: built-in proxy, managed nginx/HAProxy, or none."""

    @property
    def routes(self) -> bool:
        """True when requests reach the workers through this front: a worker is drained
        through it (``wait_idle``), a reload starts the new generation on the other port
        block, and the front answers fleet's own routes (``add_local_route``)."""
        ...

    @property
    def port(self) -> int | None:
        """The port fleet itself listens on (port 0 resolved), once started; None when no
        fleet process listens for clients."""
        ...

    @property
    def redirect_port(self) -> int | None:
        """The bound ``--https-redirect-port``, if fleet serves it."""
        ...

    @property
    def stats(self) -> "ProxyStats | None":
        """Per-worker counters, when fleet's own proxy counts them."""
        ...

    def banner(self) -> list[str]:
        """Lines for the start-up banner."""
        ...

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None: ...

    def attach(self, crew: Crew) -> None: ...

    async def serve(self) -> None: ...

    async def stop_accepting(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def close(self) -> None: ...

    # -- workers ---------------------------------------------------------------------------------
    def worker_changed(self, info: "WorkerInfo") -> None: ...

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        """True once the worker has no request in flight (False: timed out)."""
        ...

    def slot_of(self, worker_id: str) -> str:
        """The worker's metrics label (its slot), as the front knows it."""
        ...

    def check_scale(self, workers: int) -> str | None:
        """Why the front cannot follow ``fleet scale workers``, or None."""
        ...

    async def settle(self) -> None:
        """Return once every routing change made so far applies to the next request."""
        ...

    # -- what the front serves itself ------------------------------------------------------------
    def add_local_route(self, path: str, handler: RouteHandler, headers: Iterable[tuple[str, str]] = ()) -> None:
        ...

    def serve_static(self, roots: Callable[[], list[Any]]) -> None:
        """Serve these files from the front (Bokeh's); a front that serves no files does not
        call ``roots``."""
        ...

    def reload_tls(self) -> str | None:
        """Read the TLS certificate again; a message for the log, or None (no TLS here)."""
        ...

    async def check(self, config: Any) -> str | None:
        """Why the front cannot take a reloaded configuration (a managed server rejects its
        file), or None; before anything of the reload is applied."""
        ...

    async def apply(self, config: Any) -> str | None:
        """A reloaded configuration (``fleet.config.Config``) for new connections, in every
        process of the front before this returns; a note for the operator, or None."""
        ...

    # -- reports ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``data_plane`` of ``fleet status --json``."""
        ...

    def proxies(self) -> list[dict[str, Any]] | None:
        """``proxies`` of ``fleet status --json``: each proxy process, or None with one."""
        ...


__all__ = ["Front", "FrontError", "Crew", "RouteHandler", "WaitIdle"]
