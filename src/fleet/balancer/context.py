"""What every connection of one balancer shares: settings, upstreams, counters, routes, the
queue of requests waiting for a worker, and the rules that look at a client's address.

``client_address`` is the one place a client's address is resolved; ``--metrics-allow`` and the
per-IP connection limit use it, so making it consult trusted proxies changes them all.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from fleet.balancer.allow import Allowlist
from fleet.balancer.contracts import ProxyClient
from fleet.balancer.exchange import Limits
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.stats import ProxyStats
from fleet.balancer.trust import TrustedProxies, resolve_from_headers
from fleet.balancer.waitqueue import QUEUE_LIMIT, WaitQueue

if TYPE_CHECKING:
    from fleet.balancer.bokeh_routing import BokehRouting
    from fleet.balancer.settings import ProxyViews
    from fleet.config.sections import LimitSettings, ProxySettings, TLSSettings, TrustSettings

CONNECT_TIMEOUT = 5.0
# Client bytes after an Upgrade head held while the worker has not answered 101 yet.
UPGRADE_HOLD = 64 * 1024
# How long a request pinned by affinity waits for its own worker (at --worker-max-conns)
# before it goes to the least-loaded one instead (a session may live there, so wait a little).
PINNED_WAIT = 2.0
# Built-in routes answer under this prefix; it never reaches a worker.
BUILTIN_PREFIX = b"/_fleet/"
LocalHandler = Callable[[], tuple[int, str, bytes]]
# A clock: seconds on a monotonic scale (``loop.time``, ``time.monotonic``). Timers and caches
# take one, so a test can hand in its own instead of waiting for real time to pass.
Clock = Callable[[], float]
# How long a built-in route's render is reused, unless FLEET_METRICS_TTL says otherwise.
RENDER_TTL = 1.0
RENDER_TTL_MAX = 60.0


def render_ttl(environ: Mapping[str, str]) -> float:
    """The built-in routes' cache lifetime: ``FLEET_METRICS_TTL`` seconds (0 renders every
    answer; end-to-end tests use it to read counters right after they act), else 1 s."""
    text = environ.get("FLEET_METRICS_TTL", "").strip()
    if not text:
        return RENDER_TTL
    try:
        ttl = float(text)
    except ValueError:
        ttl = -1.0
    if not 0.0 <= ttl <= RENDER_TTL_MAX:  # also refuses nan and inf
        raise ValueError(f"FLEET_METRICS_TTL must be a number of seconds from 0 to {RENDER_TTL_MAX:g}, "
                         f"not {text!r}")
    return ttl
# The Limits section's options the proxy reads per request or per connection, each a slot of
# ``ProxyContext`` under its option's name.
PER_REQUEST_LIMITS = ("max_header_size", "max_header_count", "max_trailer_size", "max_body_size",
                      "min_body_rate", "upstream_timeout", "client_timeout", "header_timeout",
                      "max_buffered_request", "queue_timeout", "max_connections_per_ip")


def client_address(trust: TrustedProxies, peer_ip: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> str:
    """The client's address as fleet's rules see it: the peer's, unless the peer is a
    ``--trusted-proxy``; then the address it forwarded (``X-Forwarded-For``, ``X-Real-IP``)."""
    if not trust:
        return peer_ip
    return resolve_from_headers(trust, peer_ip.encode(), headers).decode("latin-1")


class AddressRules:
    """Is an address inside one of these networks (``--metrics-allow``)? Answers cached."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._cache: dict[str, bool] = {}

    def allows(self, ip: str) -> bool:
        known = self._cache.get(ip)
        if known is not None:
            return known
        if ip == "unix":
            allowed = True  # a unix socket client is on this machine
        else:
            try:
                address = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                allowed = False
            else:
                mapped = getattr(address, "ipv4_mapped", None)
                if mapped is not None:
                    address = mapped
                allowed = any(address.version == n.version and address in n for n in self.networks)
        if len(self._cache) < 4096:
            self._cache[ip] = allowed
        return allowed


class CachedRoute:
    """A built-in route rendered at most once per ``ttl`` seconds of ``clock``: a scrape storm
    (or 2,000 pipelined ``GET /metrics``) costs one render a second, not one per request."""

    def __init__(self, handler: LocalHandler, clock: Clock, ttl: float = RENDER_TTL,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        self.handler = handler
        self.clock = clock
        self.ttl = ttl
        # Extra header lines of every answer, ready to write (fixed strings of fleet's own).
        self.headers = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                                for name, value in headers)
        self._at = -1e18
        self._answer: tuple[int, str, bytes] = (200, "text/plain", b"")

    def __call__(self) -> tuple[int, str, bytes]:
        now = self.clock()
        if now - self._at >= self.ttl:
            self._answer = self.handler()
            self._at = now
        return self._answer


class ProxyContext:
    """What every connection of one balancer shares: settings, upstreams, counters, routes."""

    # Slots: past 30 instance attributes CPython 3.11 loses its fast attribute access, and
    # every request reads several of these.
    __slots__ = ("loop", "stats", "upstreams", "clients", "local_routes", "closing", "max_header_size",
                 "max_header_count", "max_trailer_size", "max_body_size", "min_body_rate", "upstream_timeout",
                 "client_timeout", "header_timeout", "limits", "max_buffered_request", "queue_timeout", "sticky",
                 "trust", "response_extra", "scheme", "default_host", "allowed_hosts", "allowed_origins", "metrics_allow",
                 "max_connections_per_ip", "per_ip", "access_log", "on_connection_lost", "waiting", "bokeh",
                 "checks_hosts", "compress", "__weakref__")
    # Set from the Limits view by the PER_REQUEST_LIMITS loop below.
    max_header_size: int
    max_header_count: int
    max_trailer_size: int
    max_body_size: int
    min_body_rate: int
    upstream_timeout: float
    client_timeout: float
    header_timeout: float
    max_buffered_request: int
    queue_timeout: float
    max_connections_per_ip: int

    def __init__(self, frontend: "ProxySettings", limits: "LimitSettings", tls: "TLSSettings",
                 trust: "TrustSettings", stats: ProxyStats, upstreams: UpstreamSet,
                 access_log: Callable[[str], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.upstreams = upstreams
        self.clients: set[ProxyClient] = set()
        self.local_routes: dict[bytes, CachedRoute] = {}
        self.closing = False
        # The limits read per request or per connection: slots set once from the frozen view
        # (one attribute load on the hot path, no view built per call).
        for name in PER_REQUEST_LIMITS:
            setattr(self, name, getattr(limits, name))
        self.limits = Limits(
            header_timeout=limits.header_timeout, client_timeout=limits.client_timeout,
            queue_timeout=limits.queue_timeout, connect_timeout=CONNECT_TIMEOUT,
            upstream_timeout=limits.upstream_timeout, websocket_idle_timeout=limits.websocket_idle_timeout,
            max_header_size=limits.max_header_size, max_buffered_request=limits.max_buffered_request,
            upgrade_hold=UPGRADE_HOLD, write_high_water=64 * 1024)
        self.sticky = frontend.sticky
        self.compress = frontend.compress  # worker responses, when the client asks (balancer.compressor)
        # A fleet of Bokeh apps: affinity by session id, static files (Balancer.serve_bokeh).
        self.bokeh: BokehRouting | None = None
        self.trust = TrustedProxies(trust.trusted_proxies())
        self.scheme = b"https" if tls.ssl_certfile else b"http"
        self.default_host = f"{frontend.address}:{frontend.port}".encode()
        self.allowed_hosts = Allowlist(trust.allow_host)
        self.allowed_origins = Allowlist(trust.allow_websocket_origin
                                         or default_origins(frontend.address, frontend.port))
        self.checks_hosts = bool(self.allowed_hosts)  # read per request: an attribute, not __bool__
        # Strict-Transport-Security on every worker response over TLS (--hsts).
        self.response_extra = (b"Strict-Transport-Security: max-age=%d" % tls.hsts
                               if tls.hsts and tls.ssl_certfile else None)
        self.metrics_allow = AddressRules(trust.metrics_allow)
        self.per_ip: dict[str, int] = {}
        self.access_log = access_log
        self.on_connection_lost: Callable[[], None] | None = None  # the listener's max-connections check
        # Requests no worker can take now, oldest first (state QUEUED).
        self.waiting = WaitQueue(stats)

    def client_gone(self, client: object, counted_ip: str | None) -> None:
        """A client connection (HTTP/1.1 or HTTP/2) closed: it leaves the client set, its
        address's count (``--max-connections-per-ip``) goes down, and a paused listener may resume."""
        self.clients.discard(client)
        if counted_ip is not None:
            left = self.per_ip.get(counted_ip, 1) - 1
            if left > 0:
                self.per_ip[counted_ip] = left
            else:
                self.per_ip.pop(counted_ip, None)
        if self.on_connection_lost is not None:
            self.on_connection_lost()

    def renewed(self, views: "ProxyViews", access_log: Callable[[str], None] | None) -> "ProxyContext":
        """A context with ``views``' settings sharing this one's state (connections, counters,
        routes, queue): what a reload gives new connections, while open ones keep theirs.
        ``views`` are bound (``ProxyViews.bound``): the default origins name the real port."""
        fresh = ProxyContext(views.frontend, views.limits, views.tls, views.trust, self.stats, self.upstreams,
                             access_log)
        for shared in ("clients", "local_routes", "closing", "per_ip", "on_connection_lost", "waiting", "bokeh"):
            setattr(fresh, shared, getattr(self, shared))
        return fresh

    # -- client addresses ----------------------------------------------------------------------
    def exempt_from_ip_limits(self, peer_ip: str) -> bool:
        """Trusted proxies carry many clients on one address: per-IP limits do not apply."""
        return peer_ip == "unix" or self.trust.is_trusted(peer_ip)

    def builtin_allowed(self, client: str) -> bool:
        """``client``: the address resolved through trusted proxies (``Request.client``)."""
        return self.metrics_allow.allows(client)

    # -- requests waiting for a worker -----------------------------------------------------------
    def wake(self) -> None:
        """A worker may have room now: hand waiting requests to workers, oldest first."""
        self.waiting.wake()

    def host_allowed(self, host: bytes) -> bool:
        return not self.allowed_hosts or self.allowed_hosts.allows_host_header(host)

    def use_default_origins(self, address: str, port: int) -> None:
        """No ``--allow-websocket-origin``: the proxy's own address, as Bokeh's default is its
        own (``localhost:PORT``; ``supervisor.command.websocket_origins`` gives Bokeh workers
        the same names). Called once the port is bound (port 0 picks one)."""
        self.allowed_origins = Allowlist(default_origins(address, port))

    def origin_allowed(self, origin: bytes | None) -> bool:
        """A WebSocket upgrade's ``Origin`` against the list; a request without one (not from a
        browser) is not a cross-site request and passes."""
        return origin is None or self.allowed_origins.allows_origin(origin)


def default_origins(address: str, port: int) -> list[str]:
    """The proxy's own public address(es): ``localhost`` and ``127.0.0.1`` on its port, plus
    ``--address`` when it is a name or address other than loopback or any."""
    names = ["localhost", "127.0.0.1"]
    if address and address not in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""):
        names.append(f"[{address}]" if ":" in address else address)
    origins = [f"{name}:{port}" for name in names]
    if port == 443:
        # A browser leaves the default port out of Origin (https://host), and Bokeh's rule
        # reads a name without a port as :80: the bare name stands for "no port given".
        origins += names
    return origins


__all__ = ["AddressRules", "BUILTIN_PREFIX", "QUEUE_LIMIT", "CachedRoute", "Clock", "ProxyContext", "client_address",
           "default_origins", "render_ttl"]
