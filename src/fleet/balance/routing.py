"""Which host a request goes to, in front of several fleets (pure, no I/O).

In order: a request naming a Bokeh session (the WebSocket's token, the ``Bokeh-Session-Id``
header, ``bokeh-session-id``/``bokeh-token`` in the query: ``balancer.bokeh_session`` reads
them) goes to the host in the id (``h1~g1w0-...``, ``fleet.hostids``) while it can serve,
draining or not; an id without a known, available host goes to the host a rendezvous hash of
the id picks among the available, non-draining hosts, so a page and its WebSocket meet there
(and only the sessions of a host that leaves move when it does). Then the affinity cookie
(``fleet_affinity=h1~g1w0``, set by the host) names its host. Anything else: None, and the
proxy takes the host with the least connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.balancer.bokeh_routing import BokehRouting
from fleet.balancer.bokeh_session import rendezvous, session_id_of
from fleet.balancer.policy import affinity_from_cookie
from fleet.hostids import HOST_SEPARATOR, split_host

if TYPE_CHECKING:
    from fleet.balancer.head import Request
    from fleet.balancer.policy import UpstreamSet

# Not a host id (it has the separator), so ``affinity_from_cookie`` leaves every value whole.
_NO_HOST = HOST_SEPARATOR


def host_for_session(session_id: str, known: "UpstreamSet", now: float) -> str | None:
    """The host named in ``session_id`` if it can serve, else the rendezvous choice."""
    host, _ = split_host(session_id)
    if host is not None:
        upstream = known.get(host)
        if upstream is not None and upstream.available(now):
            return host
    return rendezvous(session_id, [u.id for u in known if u.available(now) and not u.draining])


def host_from_cookie(cookie_header: bytes, known: "UpstreamSet", now: float) -> str | None:
    """The host a ``fleet_affinity=host~worker`` cookie names, if it can serve (draining too)."""
    value = affinity_from_cookie(cookie_header, _NO_HOST)
    if value is None:
        return None
    host, _ = split_host(value)
    upstream = known.get(host) if host is not None else None
    return host if upstream is not None and upstream.available(now) else None


class HostRouting(BokehRouting):
    """``ProxyContext.bokeh`` of the front tier: host affinity, and no static files (each host's
    proxy serves its own)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None, by_session=True)

    def affinity(self, request: "Request", upstreams: "UpstreamSet", now: float) -> str | None:
        session_id = session_id_of(request.bokeh_protocol, request.bokeh_session, request.query)
        if session_id is not None:
            return host_for_session(session_id, upstreams, now)
        if request.affinity_cookie is not None:
            return host_from_cookie(request.affinity_cookie, upstreams, now)
        return None


__all__ = ["HostRouting", "host_for_session", "host_from_cookie"]
