"""How a worker is chosen, and whether a failed request is tried again.

Least connections over ready upstreams, ties rotated, sticky cookie, ``--worker-max-conns``,
draining workers; ``retry_decision`` is the one place a failure becomes a retry (nginx's
``ngx_http_upstream_next`` is the model).

Pure logic, no sockets: ``UpstreamSet`` holds one ``Upstream`` record per worker (its address,
readiness, passive-health state and counters) and answers ``choose()``. The protocol code in
``balancer.protocol`` asks it for a worker per request and keeps each record's counters up to
date; the pool of idle connections hangs off the record but is managed by the protocol code.

Why rotate ties: with least connections and short requests nearly every choice is a tie at
load 0; always taking the first would send all sequential traffic to ``w0``.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any, Iterable

from fleet.balancer.stats import ProxyStats, UpstreamStats
from fleet.hostids import local_part, worker_key

AFFINITY_COOKIE = "fleet_affinity"
_COOKIE_KEY = AFFINITY_COOKIE.encode() + b"="

# A connect error takes a worker out of rotation for this long (passive health, like nginx's
# fail_timeout), unless its supervisor reports it ready again first.
DOWN_SECONDS = 2.0


class Upstream:
    """One worker (or backend server) as the balancer sees it."""

    __slots__ = ("id", "host", "port", "ready", "down_until", "stats", "idle", "cookie", "draining",
                 "idle_waiters")

    def __init__(self, upstream_id: str, host: str, port: int, stats: UpstreamStats, ready: bool,
                 secure_cookie: bool = False, cookie_path: str = "/", cookie_host: str | None = None) -> None:
        self.id = upstream_id
        self.host = host
        self.port = port
        self.ready = ready
        self.down_until = 0.0  # monotonic time until which a connect error keeps it out
        self.stats = stats
        self.draining = False  # no new clients; requests pinned to it by affinity still come
        self.idle_waiters: list[asyncio.Future[bool]] = []  # Balancer.wait_idle futures
        self.idle: list[Any] = []  # pooled keep-alive connections (balancer.upstream objects)
        # The Set-Cookie header a response from this worker carries to a client without affinity.
        # The id is opaque (w0, b1), never an address: a client learns nothing about the backends.
        # With --host-id it names the host too (``hostids.worker_key``), for a front tier.
        self.cookie = (b"Set-Cookie: " + _COOKIE_KEY + worker_key(cookie_host, upstream_id).encode()
                       + b"; Path=" + cookie_path.encode() + b"; HttpOnly; SameSite=Lax"
                       + (b"; Secure" if secure_cookie else b""))

    def available(self, now: float) -> bool:
        return self.ready and self.down_until <= now

    def notify_if_idle(self) -> None:
        """Resolve ``wait_idle`` futures once nothing is in flight on this worker."""
        if self.idle_waiters and self.stats.active_requests <= 0 and self.stats.websockets <= 0:
            waiters, self.idle_waiters = self.idle_waiters, []
            for future in waiters:
                if not future.done():
                    future.set_result(True)

    def __repr__(self) -> str:
        return f"Upstream({self.id} {self.host}:{self.port} ready={self.ready})"


class UpstreamSet:
    """The upstreams of one balancer and the least-connections choice among them."""

    def __init__(self, stats: ProxyStats, worker_max_conns: int = 0, secure_cookie: bool = False,
                 cookie_path: str = "/", cookie_host: str | None = None) -> None:
        self._stats = stats
        self.worker_max_conns = worker_max_conns  # 0: no cap
        self._secure_cookie = secure_cookie  # the proxy serves TLS: the affinity cookie is Secure
        self._cookie_path = cookie_path  # Bokeh's --prefix: the cookie is the prefix's apps'
        self._cookie_host = cookie_host  # --host-id: the cookie names the host too
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
            existing.draining = False
            return existing
        upstream = Upstream(upstream_id, host, port, self._stats.upstream(upstream_id), ready,
                            self._secure_cookie, self._cookie_path, self._cookie_host)
        self._by_id[upstream_id] = upstream
        self._order.append(upstream)
        return upstream

    def remove(self, upstream_id: str) -> Upstream | None:
        upstream = self._by_id.pop(upstream_id, None)
        if upstream is not None:
            self._order.remove(upstream)
            upstream.ready = False
        return upstream

    def set_ready(self, upstream_id: str, ready: bool) -> Upstream | None:
        upstream = self._by_id.get(upstream_id)
        if upstream is not None:
            upstream.ready = ready
            if ready:
                upstream.down_until = 0.0  # the supervisor's probe beats passive health
            else:
                upstream.draining = False  # a worker going away is no longer draining; if it
                # comes back under the same id (a crash restart) it takes new clients again
        return upstream

    def mark_down(self, upstream: Upstream, now: float) -> None:
        upstream.down_until = now + DOWN_SECONDS

    def set_draining(self, upstream_id: str, draining: bool = True) -> Upstream | None:
        upstream = self._by_id.get(upstream_id)
        if upstream is not None:
            upstream.draining = draining
        return upstream

    def pinned_target(self, now: float, affinity: str | None, exclude: Iterable[Upstream] = ()) -> Upstream | None:
        """The worker an affinity cookie names, if it can still serve it (draining or not)."""
        if affinity is None:
            return None
        preferred = self._by_id.get(affinity)
        if preferred is None or not preferred.available(now) or preferred in exclude:
            return None
        return preferred

    def full(self, upstream: Upstream) -> bool:
        cap = self.worker_max_conns
        return cap > 0 and load_of(upstream.stats)[0] >= cap

    def choose(self, now: float, affinity: str | None = None,
               exclude: Iterable[Upstream] = ()) -> Upstream | None:
        """The worker for a new request: the affinity worker if it is available and below
        --worker-max-conns (draining or not), else the available, non-draining one with the
        least load (in-flight requests + open WebSockets) below the cap, ties rotated. None:
        the request waits (``QUEUED``). With ``--proxy-processes N`` the counts compared are
        the fleet-wide ones (``load_of``)."""
        if affinity is not None:
            preferred = self.pinned_target(now, affinity, exclude)
            if preferred is not None and not self.full(preferred):
                return preferred
        cap = self.worker_max_conns
        order = self._order
        count = len(order)
        if count == 0:
            return None
        start = self._rotation = (self._rotation + 1) % count
        best: Upstream | None = None
        best_load = 0
        for offset in range(count):
            upstream = order[(start + offset) % count]
            if not upstream.ready or upstream.down_until > now or upstream.draining or upstream in exclude:
                continue
            stats = upstream.stats
            if type(stats) is UpstreamStats:  # load_of, inline: this runs per candidate, per request
                active = stats.active_requests
                load = active + stats.websockets
            else:
                active = sum(stats.fleet_active)  # type: ignore[attr-defined]
                load = active + sum(stats.fleet_websockets)  # type: ignore[attr-defined]
            if cap and active >= cap:
                continue
            if best is None or load < best_load:
                best, best_load = upstream, load
                if load == 0:
                    break
        return best


def load_of(stats: UpstreamStats) -> tuple[int, int]:
    """(in-flight requests, in-flight + WebSockets) of a worker, over every proxy process: a
    ``loadtable.SharedUpstreamStats`` (``--proxy-processes N``) sums its column of the shared
    table (``fleet_active``, ``fleet_websockets``: live views), a plain one is the only count."""
    if type(stats) is UpstreamStats:
        active = stats.active_requests
        return active, active + stats.websockets
    active = sum(stats.fleet_active)  # type: ignore[attr-defined]
    return active, active + sum(stats.fleet_websockets)  # type: ignore[attr-defined]


def affinity_from_cookie(cookie_header: bytes, host_id: str | None = None) -> str | None:
    """The worker id in a ``Cookie`` header's ``fleet_affinity`` (the last one wins), if any;
    a ``host~worker`` value of this host (``--host-id``) names its worker."""
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
        return local_part(value.decode("ascii"), host_id)
    except UnicodeDecodeError:
        return None


class Failure(enum.Enum):
    """How an attempt to get a response from a worker failed."""

    CONNECT = "connect"  # no connection: nothing reached the worker
    CLOSED = "closed"  # the connection closed (or reset) before any response byte
    TIMEOUT = "timeout"  # no response head within --upstream-timeout
    BAD_RESPONSE = "bad_response"  # the worker sent something that is not HTTP


def retry_decision(failure: Failure, *, sent: bool, answered: bool, idempotent: bool,
                   replayable: bool, tries_left: int, time_left: float) -> bool:
    """Whether a failed request goes to another worker (nginx ``ngx_http_upstream_next``).

    ``sent``: request bytes reached the worker's socket; ``answered``: response bytes came
    back (then the worker may have acted, and part of an answer may be out: never retried);
    ``replayable``: the proxy still has the whole request (a bodiless request).
    """
    if answered or time_left <= 0:
        return False
    if failure is Failure.CONNECT:
        # Nothing reached the worker: any method is safe, and no request can be the cause (a
        # refused connect is a worker that died or is not listening yet), so this does not use
        # up tries. What bounds it is the time budget and the worker being marked down.
        return replayable or not sent
    if tries_left <= 0:
        return False
    if failure is Failure.CLOSED:
        # The worker closed without a word: it died, or a pooled connection went stale. A
        # request it may have acted on is sent again only if repeating it is harmless.
        return idempotent and replayable
    # A timeout or a garbled answer: the worker got the request and is slow or broken;
    # sending it elsewhere would double the load a slow worker is already under.
    return False
