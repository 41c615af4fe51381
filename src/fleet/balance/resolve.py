"""Asking DNS for a ``--resolve`` target's addresses (dnspython's asyncio resolver).

``NAME:PORT`` asks A and AAAA; ``_service._proto.NAME`` (no port) asks SRV, then A and AAAA of
each target, with each record's port. The resolvers are those of ``/etc/resolv.conf`` (as
HAProxy's ``parse-resolv-conf``), or the ``--resolver ADDR[:PORT]`` given. Every ask is bounded
by ``ASK_TIMEOUT``. The TTL of an answer is the smallest of the records it used. What a failure
changes is ``dnsplan``'s decision, not this module's.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from fleet.balance.dnsplan import Address, Answer

ASK_TIMEOUT = 2.0  # one name, every resolver and retry included
MAX_SRV_TARGETS = 64  # a bound on what one answer can make the front tier probe
EMPTY = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)


class ResolveError(Exception):
    """No usable answer (timeout, SERVFAIL, no resolver): the last good one stays."""


def make_resolver(resolvers: tuple[tuple[str, int], ...]) -> dns.asyncresolver.Resolver:
    """The system's resolvers, or the ones given (then /etc/resolv.conf is not read)."""
    if not resolvers:
        resolver = dns.asyncresolver.Resolver(configure=True)
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in resolvers]
        resolver.port = resolvers[0][1]
    resolver.lifetime = ASK_TIMEOUT
    resolver.timeout = ASK_TIMEOUT / 2
    resolver.cache = None  # the TTL is ours to honour (dnsplan), not a cache's
    return resolver


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> tuple[set[str], float]:
    found: set[str] = set()
    ttl = float("inf")
    results = await asyncio.gather(*(resolver.resolve(name, kind, raise_on_no_answer=True)
                                     for kind in ("A", "AAAA")), return_exceptions=True)
    errors = []
    for result in results:
        if isinstance(result, EMPTY):
            continue
        if isinstance(result, BaseException):
            errors.append(result)
            continue
        found.update(record.address for record in result)
        ttl = min(ttl, float(result.rrset.ttl))
    # One family answered: use it (a server that refuses AAAA for an IPv4-only name is common);
    # the other is asked again with the next refresh.
    if errors and not found:
        raise ResolveError(f"{name}: {type(errors[0]).__name__}: {errors[0]}")
    return found, ttl


async def resolve(resolver: dns.asyncresolver.Resolver, name: str, port: int | None) -> Answer:
    """The addresses a target names now; an empty Answer for NXDOMAIN or no records."""
    try:
        if port is not None:
            found, ttl = await _addresses(resolver, name)
            return Answer(frozenset((ip, port) for ip in found), 0.0 if ttl == float("inf") else ttl)
        try:
            srv = await resolver.resolve(name, "SRV")
        except EMPTY:
            return Answer(frozenset(), 0.0)
        ttl = float(srv.rrset.ttl)
        records = sorted(srv, key=lambda r: (r.priority, -r.weight))[:MAX_SRV_TARGETS]
        addresses: set[Address] = set()
        for record in records:
            found, record_ttl = await _addresses(resolver, record.target.to_text())
            addresses.update((ip, int(record.port)) for ip in found)
            ttl = min(ttl, record_ttl)
        return Answer(frozenset(addresses), ttl)
    except ResolveError:
        raise
    except (dns.exception.DNSException, OSError) as exc:
        raise ResolveError(f"{name}: {type(exc).__name__}: {exc}") from None


__all__ = ["ResolveError", "make_resolver", "resolve"]
