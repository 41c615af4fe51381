"""Whose forwarding headers fleet believes, and the client address they resolve to.

A client can write ``X-Forwarded-For: 127.0.0.1`` or ``X-Scheme: https`` itself; only a proxy
named in ``--trusted-proxy`` (nginx's ``set_real_ip_from``) may tell fleet who the client is.
Pure logic, no sockets: ``TrustedProxies`` answers "is this peer a trusted proxy" and resolves
the real client address the way nginx's ``real_ip_recursive on`` does: walk
``X-Forwarded-For`` from the right, skipping trusted hops; the first untrusted address is the
client. ``FORWARDING_HEADERS`` / ``is_forwarding_header`` say which request headers carry such
claims, so both the proxy (``balancer.head``) and the worker guard (``worker.guard``) strip the
same set from untrusted peers. The entries themselves are parsed by ``fleet.rules``.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Union

from fleet.rules import LOOPBACK, PRIVATE, UNIX, parse_cidr  # parsed where the options are declared

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Request headers through which a client claims a different address, scheme, host, port or
# path prefix (Tornado reads X-Real-IP, X-Forwarded-For, X-Scheme, X-Forwarded-Proto; other
# frameworks read the rest). Any ``X-Forwarded-*`` counts as well (``is_forwarding_header``).
FORWARDING_HEADERS = frozenset({
    b"forwarded", b"x-real-ip", b"x-scheme", b"x-url-scheme", b"front-end-https",
    b"x-client-ip", b"x-cluster-client-ip", b"true-client-ip", b"x-original-forwarded-for",
})
_X_FORWARDED = b"x-forwarded-"

# The peer name of a --unix-socket client (``rules.UNIX`` is the entry that trusts it).
UNIX_PEER = b"unix"

# Hops of X-Forwarded-For looked at; a longer chain is a client padding it, not real proxies.
MAX_HOPS = 32
# Peers remembered by is_trusted (one dict lookup per request on the hot path).
_CACHE_SIZE = 4096


def is_forwarding_header(lower_name: bytes) -> bool:
    """Whether a (lowercase) request header is a forwarding claim only a trusted proxy may make."""
    return lower_name in FORWARDING_HEADERS or lower_name.startswith(_X_FORWARDED)


def parse_ip(value: bytes | str) -> Address | None:
    """An IP address from a header or peer name (``::ffff:1.2.3.4`` as IPv4), else None."""
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else value
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The ``--trusted-proxy`` networks and the decisions made from them."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        entries = [parse_cidr(entry) for entry in networks]
        self.unix = UNIX in entries
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry) for entry in entries if entry != UNIX)
        self._cache: dict[bytes, bool] = {}
        # ``bool(self)`` as a plain attribute: read on every request, where ``__bool__`` is a call.
        self.any = self.unix or bool(self.networks)

    def __bool__(self) -> bool:
        return self.any

    def contains(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def is_trusted(self, peer: bytes | str) -> bool:
        """Whether this peer (an IP, or ``unix`` for a --unix-socket client) is a trusted proxy."""
        key = peer.encode() if isinstance(peer, str) else peer
        known = self._cache.get(key)
        if known is not None:
            return known
        if key == UNIX_PEER:
            trusted = self.unix
        else:
            address = parse_ip(key)
            trusted = address is not None and self.contains(address)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = trusted
        return trusted

    def resolve(self, peer: bytes, forwarded_for: bytes | None, real_ip: bytes | None) -> bytes:
        """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
        ``X-Forwarded-For`` entry that is not a trusted proxy (nginx ``real_ip_recursive on``),
        or ``X-Real-IP`` when the proxy sent no ``X-Forwarded-For``.

        A malformed entry ends the walk at the last trusted hop (as nginx does): a client cannot
        make an unparseable value its address."""
        if not self.is_trusted(peer):
            return peer
        if forwarded_for:
            resolved = peer
            hops = forwarded_for.split(b",")
            for hop in reversed(hops[-MAX_HOPS:]):
                address = parse_ip(hop)
                if address is None:
                    return resolved
                resolved = str(address).encode()
                if not self.contains(address):
                    return resolved
            return resolved
        if real_ip:
            address = parse_ip(real_ip)
            if address is not None:
                return str(address).encode()
        return peer


def resolve_from_headers(trusted: TrustedProxies, peer: bytes,
                         headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``TrustedProxies.resolve`` over a raw header list (repeated X-Forwarded-For fields are
    one list, RFC 9110 5.3); for callers that have not collected the values themselves."""
    if not trusted.is_trusted(peer):
        return peer
    forwarded_for: bytes | None = None
    real_ip: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
        elif lower == b"x-real-ip":
            real_ip = value
    return trusted.resolve(peer, forwarded_for, real_ip)


__all__ = ["FORWARDING_HEADERS", "LOOPBACK", "PRIVATE", "TrustedProxies", "is_forwarding_header",
           "parse_cidr", "parse_ip", "resolve_from_headers"]
