"""The settings the supervisor reads: the frozen views of the sections it spans.

The supervisor runs workers (Workers) on ports placed around the proxy's ``--port`` (Proxy),
replaces them after ``--max-requests`` (Recycling) and writes their output under ``--log-dir``
(Logs). Each worker's command carries what a worker enforces itself: two size limits (Limits),
the trusted proxies and WebSocket origins (Trust) and, for Bokeh apps, the Bokeh section.
``SupervisorViews`` holds exactly those views, built once at start by the composition root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.config.sections import (
    BokehSettings,
    LimitSettings,
    ProxySettings,
    RecyclingSettings,
    TrustSettings,
    WorkerSettings,
)
import fleet.supervisor.portblocks as portblocks
from fleet.supervisor.generations import worker_id

if TYPE_CHECKING:
    from fleet.config import Config


@dataclass(frozen=True)
class SupervisorViews:
    """The supervisor's sections, frozen; ``workers`` is the Workers section."""

    workers: WorkerSettings
    frontend: ProxySettings
    limits: LimitSettings
    trust: TrustSettings
    bokeh: BokehSettings
    recycling: RecyclingSettings
    log_dir: str | None = None  # --log-dir (Logs)

    @classmethod
    def of(cls, config: "Config") -> "SupervisorViews":
        """Pick the supervisor's sections out of a whole config (at start, by the composition root)."""
        return cls(config.supervisor, config.frontend, config.limits, config.trust, config.bokeh,
                   config.recycling, log_dir=config.logs.log_dir)

    # -- port topology (``Config`` has the same three, for the renderers) -------------------------
    def worker_port(self, index: int, block: int = 0) -> int:
        """Port of worker ``index`` in port block 0 (``--base-port``) or 1 (``--surge-base-port``)."""
        return (self.workers.base_port if block == 0 else self.surge_base()) + index

    def surge_base(self) -> int:
        workers = self.workers
        return portblocks.surge_base(workers.base_port, workers.workers, self.frontend.port,
                                     workers.surge_base_port)

    def worker_id(self, index: int, generation: int = 1) -> str:
        return worker_id(generation, index)


__all__ = ["SupervisorViews"]
