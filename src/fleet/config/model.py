"""``Config``: every setting of a fleet run, all sections at once, frozen.

``Config`` inherits every section dataclass, so flat access (``config.max_body_size``),
``Config(workers=2)`` and ``dataclasses.replace(config, workers=3)`` work as they always did.
``config.limits``, ``config.tls``, ... are the frozen views a subsystem is given: a copy of that
section's fields and nothing else, built once, so a reload can tell which subsystem a change
touches (``changed_sections``). A subsystem that spans a few sections takes those views
explicitly (``balancer.settings.ProxyViews``, ``supervisor.settings.SupervisorViews``).

Only the composition roots hold the whole ``Config``: ``runner`` (with ``frontage`` and
``front.factory``) for ``fleet up``, ``balancer.standalone`` for ``fleet balance``, and ``cli``
which builds it; and the renderers, which write every option into a generated file
(``configgen``, and the managed nginx/HAProxy of ``dataplane`` through it).
``tests/test_config_views.py`` holds that list and fails on a module outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import TypeVar

from fleet.config.sections import (
    SECTIONS,
    AcmeSettings,
    BokehSettings,
    GeneratedSettings,
    HookSettings,
    LimitSettings,
    LogSettings,
    OperationsSettings,
    ProxySettings,
    RecyclingSettings,
    TLSSettings,
    TrustSettings,
    WorkerSettings,
)
import fleet.supervisor.portblocks as portblocks
from fleet.supervisor.generations import worker_id

S = TypeVar("S")


# A dataclass collects its bases' fields from the last base to the first: the sections are
# listed here in reverse so that ``fields(Config)`` (and so every option list) runs in
# ``SECTIONS`` order, Workers first.
@dataclass(frozen=True)
class Config(
    GeneratedSettings,
    OperationsSettings,
    HookSettings,
    LogSettings,
    RecyclingSettings,
    BokehSettings,
    TrustSettings,
    AcmeSettings,
    TLSSettings,
    LimitSettings,
    ProxySettings,
    WorkerSettings,
):
    """Every setting of a fleet run. Built by ``build_config``; never mutated."""

    # -- the frozen view of each section ------------------------------------------------
    def view(self, settings: type[S]) -> S:
        """The frozen ``settings`` section of this config (a copy of its fields only)."""
        return settings(**{f.name: getattr(self, f.name) for f in fields(settings)})  # type: ignore[arg-type]

    @cached_property
    def supervisor(self) -> WorkerSettings:
        return self.view(WorkerSettings)

    @cached_property
    def frontend(self) -> ProxySettings:
        return self.view(ProxySettings)

    @cached_property
    def limits(self) -> LimitSettings:
        return self.view(LimitSettings)

    @cached_property
    def tls(self) -> TLSSettings:
        return self.view(TLSSettings)

    @cached_property
    def acme(self) -> AcmeSettings:
        return self.view(AcmeSettings)

    @cached_property
    def trust(self) -> TrustSettings:
        return self.view(TrustSettings)

    @cached_property
    def bokeh(self) -> BokehSettings:
        return self.view(BokehSettings)

    @cached_property
    def recycling(self) -> RecyclingSettings:
        return self.view(RecyclingSettings)

    @cached_property
    def logs(self) -> LogSettings:
        return self.view(LogSettings)

    @cached_property
    def hooks(self) -> HookSettings:
        return self.view(HookSettings)

    @cached_property
    def operations(self) -> OperationsSettings:
        return self.view(OperationsSettings)

    @cached_property
    def generated(self) -> GeneratedSettings:
        return self.view(GeneratedSettings)

    # -- values derived from more than one section ---------------------------------------
    def worker_port(self, index: int, block: int = 0) -> int:
        """Port of worker ``index`` in port block 0 (``--base-port``) or 1 (``--surge-base-port``)."""
        return (self.base_port if block == 0 else self.surge_base()) + index

    def worker_id(self, index: int, generation: int = 1) -> str:
        """``g<generation>w<index>``: unique across generations, no ``.`` (Bokeh splits signed
        session ids at the first dot)."""
        return worker_id(generation, index)

    def surge_base(self) -> int:
        """``--surge-base-port``, or a default that overlaps neither the base block nor --port."""
        return portblocks.surge_base(self.base_port, self.workers, self.port, self.surge_base_port)

    def public_url(self) -> str:
        scheme = "https" if self.ssl_certfile else "http"
        host = "localhost" if self.address in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.address
        return f"{scheme}://{host}:{self.port}"


def changed_sections(before: Config, after: Config) -> tuple[str, ...]:
    """The keys of the sections whose values differ: which subsystems a new config touches."""
    return tuple(s.key for s in SECTIONS if before.view(s.settings) != after.view(s.settings))


__all__ = ["Config", "changed_sections"]
