"""How a worker is chosen: least connections over ready upstreams, ties rotated, sticky cookie.

Pure logic, no sockets: ``UpstreamSet`` holds one ``Upstream`` record per worker (its address,
readiness, passive-health state and counters) and answers ``choose()``. The protocol code in
``balancer.protocol`` asks it for a worker per request and keeps each record's counters up to
date; the pool of idle connections hangs off the record but is managed by the protocol code.

Why rotate ties: with least connections and short requests nearly every choice is a tie at
load 0; always taking the first would send all sequential traffic to ``w0``.
"""

from __future__ import annotations

from typing import Any, Iterable

from fleet.balancer.stats import ProxyStats, UpstreamStats

AFFINITY_COOKIE = "fleet_affinity"
_COOKIE_KEY = AFFINITY_COOKIE.encode() + b"="

# A connect error takes a worker out of rotation for this long (passive health, like nginx's
# fail_timeout), unless its supervisor reports it ready again first.
DOWN_SECONDS = 2.0


class Upstream:
    """One worker (or backend server) as the balancer sees it."""

    __slots__ = ("id", "host", "port", "ready", "draining", "down_until", "stats", "idle", "cookie")

    def __init__(self, upstream_id: str, host: str, port: int, stats: UpstreamStats, ready: bool) -> None:
        self.id = upstream_id
        self.host = host
        self.port = port
        self.ready = ready
        # STAND-IN (generations branch, replaced by the core rewrite at merge): a draining
        # upstream takes no new clients, only requests whose affinity cookie names it.
        self.draining = False
        self.down_until = 0.0  # monotonic time until which a connect error keeps it out
        self.stats = stats
        self.idle: list[Any] = []  # pooled keep-alive connections (balancer.upstream objects)
        # The Set-Cookie header a response from this worker carries to a client without affinity.
        self.cookie = (b"Set-Cookie: " + _COOKIE_KEY + upstream_id.encode()
                       + b"; Path=/; HttpOnly; SameSite=Lax")

    def available(self, now: float) -> bool:
        return self.ready and self.down_until <= now

    def __repr__(self) -> str:
        return f"Upstream({self.id} {self.host}:{self.port} ready={self.ready})"


class UpstreamSet:
    """The upstreams of one balancer and the least-connections choice among them."""

    def __init__(self, stats: ProxyStats) -> None:
        self._stats = stats
        self._by_id: dict[str, Upstream] = {}
        self._order: list[Upstream] = []
        self._rotation = 0

    def __iter__(self) -> Any:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def get(self, upstream_id: str) -> Upstream | None:
        return self._by_id.get(upstream_id)

    def add(self, upstream_id: str, host: str, port: int, ready: bool = False) -> Upstream:
        existing = self._by_id.get(upstream_id)
        if existing is not None:
            existing.host, existing.port, existing.ready = host, port, ready
            existing.down_until = 0.0
            return existing
        upstream = Upstream(upstream_id, host, port, self._stats.upstream(upstream_id), ready)
        self._by_id[upstream_id] = upstream
        self._order.append(upstream)
        return upstream

    def remove(self, upstream_id: str) -> Upstream | None:
        upstream = self._by_id.pop(upstream_id, None)
        if upstream is not None:
            self._order.remove(upstream)
            upstream.ready = False
            upstream.draining = False
        return upstream

    def set_ready(self, upstream_id: str, ready: bool) -> Upstream | None:
        upstream = self._by_id.get(upstream_id)
        if upstream is not None:
            upstream.ready = ready
            upstream.draining = False
            if ready:
                upstream.down_until = 0.0  # the supervisor's probe beats passive health
        return upstream

    def set_draining(self, upstream_id: str) -> Upstream | None:
        """STAND-IN (generations branch): out of the least-connections choice, still pinned-to."""
        upstream = self._by_id.get(upstream_id)
        if upstream is not None:
            upstream.ready = False
            upstream.draining = True
        return upstream

    def mark_down(self, upstream: Upstream, now: float) -> None:
        upstream.down_until = now + DOWN_SECONDS

    def choose(self, now: float, affinity: str | None = None,
               exclude: Iterable[Upstream] = ()) -> Upstream | None:
        """The worker for a new request: the affinity worker if it is available, else the
        available one with the least load (in-flight requests + open WebSockets), ties rotated."""
        if affinity is not None:
            preferred = self._by_id.get(affinity)
            if (preferred is not None and (preferred.available(now) or (
                    preferred.draining and preferred.down_until <= now)) and preferred not in exclude):
                return preferred
        order = self._order
        count = len(order)
        if count == 0:
            return None
        start = self._rotation = (self._rotation + 1) % count
        best: Upstream | None = None
        best_load = 0
        for offset in range(count):
            upstream = order[(start + offset) % count]
            if not upstream.ready or upstream.down_until > now or upstream in exclude:
                continue
            stats = upstream.stats
            load = stats.active_requests + stats.websockets
            if best is None or load < best_load:
                best, best_load = upstream, load
                if load == 0:
                    break
        return best


def affinity_from_cookie(cookie_header: bytes) -> str | None:
    """The worker id in a ``Cookie`` header's ``fleet_affinity`` (the last one wins), if any."""
    position = cookie_header.rfind(_COOKIE_KEY)
    if position < 0:
        return None
    if position > 0 and cookie_header[position - 1] not in b" ;":
        return None  # a different cookie whose name ends in fleet_affinity
    start = position + len(_COOKIE_KEY)
    end = cookie_header.find(b";", start)
    value = cookie_header[start:] if end < 0 else cookie_header[start:end]
    value = value.strip()
    if not value or len(value) > 64:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None
