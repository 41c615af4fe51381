"""The Generated configuration section of fleet's settings.

Options of ``fleet config`` only: what the generated nginx/Apache/HAProxy configuration points
at and where it keeps its files. Read by ``fleet.configgen`` (``config.generated``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import option
from fleet.values import parse_file_path, parse_hostport


@dataclass(frozen=True)
class GeneratedSettings:
    """The Generated configuration section (``config.generated``); frozen."""

    upstream: tuple[str, ...] = option(
        (), "--upstream", multiple=True, parse=parse_hostport, metavar="HOST:PORT",
        commands=frozenset({"config"}), default_factory=tuple,
        help="Upstream server for the generated configuration (repeatable); default: the workers.",
    )
    state_dir: str | None = option(
        None, "--state-dir", parse=parse_file_path, metavar="DIR", commands=frozenset({"config"}),
        help="Where the generated nginx/Apache/HAProxy config puts pid file, logs and temp "
             "files (lets the proxy run unprivileged); default: the system paths.",
    )


__all__ = ["GeneratedSettings"]
