"""The sections of fleet's settings, in the order ``--help`` and the README show them.

One module per section, each a frozen dataclass whose fields are that section's options
(declared with ``fleet.config.declare.option``). ``Config`` is all of them at once; a
subsystem takes the frozen view of its own section (``config.limits``, ``config.tls``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fleet.config.sections.acme import AcmeSettings
from fleet.config.sections.bokeh import BokehSettings
from fleet.config.sections.generated import GeneratedSettings
from fleet.config.sections.hooks import HookSettings
from fleet.config.sections.limits import LimitSettings
from fleet.config.sections.logs import LogSettings
from fleet.config.sections.operations import OperationsSettings
from fleet.config.sections.proxy import ProxySettings
from fleet.config.sections.recycling import RecyclingSettings
from fleet.config.sections.tls import TLSSettings
from fleet.config.sections.trust import TrustSettings
from fleet.config.sections.workers import WorkerSettings


@dataclass(frozen=True)
class Section:
    """A section: its ``Config`` attribute, its heading and the dataclass of its fields."""

    key: str
    title: str
    settings: type[Any]

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.settings))


SECTIONS = (
    Section("supervisor", "Workers", WorkerSettings),
    Section("frontend", "Proxy", ProxySettings),
    Section("limits", "Limits", LimitSettings),
    Section("tls", "TLS", TLSSettings),
    Section("acme", "Automatic HTTPS", AcmeSettings),
    Section("trust", "Trust", TrustSettings),
    Section("bokeh", "Bokeh", BokehSettings),
    Section("recycling", "Recycling", RecyclingSettings),
    Section("logs", "Logs", LogSettings),
    Section("hooks", "Hooks", HookSettings),
    Section("operations", "Operations", OperationsSettings),
    Section("generated", "Generated configuration", GeneratedSettings),
)


def section_of(name: str) -> Section:
    """The section a field belongs to; KeyError for a name no section declares."""
    return _BY_FIELD[name]


_BY_FIELD = {name: section for section in SECTIONS for name in section.names()}


__all__ = [
    "SECTIONS", "AcmeSettings", "BokehSettings", "GeneratedSettings", "HookSettings", "LimitSettings", "LogSettings",
    "OperationsSettings", "ProxySettings", "RecyclingSettings", "Section", "TLSSettings",
    "TrustSettings", "WorkerSettings", "section_of",
]
