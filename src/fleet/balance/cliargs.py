"""``fleet balance``'s host options checked together before anything starts (each was checked
alone by its section): clear errors, no traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.balance.dnsplan import Address, TTLBounds
from fleet.rules import parse_resolver

if TYPE_CHECKING:
    from fleet.config import Config


def hosts_arguments(servers: tuple[str, ...], config: "Config",
                    ) -> tuple[tuple[Address, ...], tuple[tuple[str, int], ...], TTLBounds]:
    """(static addresses, resolvers, TTL bounds); ValueError says what is wrong."""
    from fleet.balancer.standalone import split_target

    if not servers and not config.resolve:
        raise ValueError("--hosts needs HOST:PORT... (or use --resolve NAME:PORT)")
    if config.proxy_processes != 1:
        raise ValueError("--proxy-processes: the front tier across hosts runs in one process")
    bounds = TTLBounds(config.dns_min_ttl, config.dns_max_ttl)
    return (tuple(split_target(server) for server in servers),
            tuple(parse_resolver(resolver) for resolver in config.resolver), bounds)


__all__ = ["hosts_arguments"]
