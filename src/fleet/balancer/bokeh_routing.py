"""The proxy's Bokeh duties: affinity by session id, and static files from memory.

``BokehRouting`` is what ``ProxyContext.bokeh`` holds for a fleet of Bokeh apps (None for
anything else, so other apps pay nothing):

- ``affinity``: the worker a request's Bokeh session belongs to (``balancer.bokeh_session``):
  the worker that made the id while it can serve (draining or not, as with the cookie), else
  the rendezvous choice among the available, non-draining workers. None: no session named
  (or an undecodable token), and the caller falls back to the cookie, then least connections.
- ``static_hit`` / ``static_response``: ``<prefix>/static/`` (BokehJS, minus ``extensions/``)
  and each directory app's ``static/``, answered by the proxy (``balancer.static_files``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable

from fleet.balancer.bokeh_session import maker_of, rendezvous, session_id_of
from fleet.balancer.static_answer import static_answer
from fleet.balancer.static_files import StaticFiles
from fleet.hostids import local_part

if TYPE_CHECKING:
    from fleet.balancer.head import Request
    from fleet.balancer.policy import UpstreamSet
    from fleet.balancer.static_files import Future, Root
    from fleet.config.sections import ProxySettings


class StaticHit:
    """A request the proxy answers from its static files (``Exchange.local``)."""

    __slots__ = ("root", "tail", "versioned")

    def __init__(self, root: "Root", tail: bytes, versioned: bool) -> None:
        self.root = root
        self.tail = tail
        self.versioned = versioned


class BokehRouting:
    __slots__ = ("static", "by_session")

    def __init__(self, static: StaticFiles | None, by_session: bool) -> None:
        self.static = static
        self.by_session = by_session

    def affinity(self, request: "Request", upstreams: "UpstreamSet", now: float) -> str | None:
        session_id = session_id_of(request.bokeh_protocol, request.bokeh_session, request.query)
        if session_id is None:
            return None
        # ``h1~g1w0-...`` (--host-id): the worker part names the worker on this host.
        maker = maker_of(local_part(session_id), (upstream.id for upstream in upstreams))
        if maker is not None:
            upstream = upstreams.get(maker)
            if upstream is not None and upstream.available(now):
                return maker
        return rendezvous(session_id, [u.id for u in upstreams if u.available(now) and not u.draining])

    def static_hit(self, request: "Request") -> StaticHit | None:
        if self.static is None or request.method not in (b"GET", b"HEAD") or request.websocket:
            return None
        found = self.static.root_for(request.path)
        if found is None:
            return None
        return StaticHit(found[0], found[1], versioned=_has_version(request.query))

    def static_response(self, hit: StaticHit, request: "Request", keep_alive: bool) -> "tuple[int, bytes] | Future[Any]":
        """(status, whole response) for a static hit: 200, 206, 304, 416 or 404; or, for a
        client that accepts a coding while the file's copies are being made, what to wait for."""
        assert self.static is not None
        entry = self.static.lookup(hit.root, hit.tail)
        if entry is not None and request.accept_encoding is not None:
            making = self.static.pending(entry)
            if making is not None:
                return making
        if entry is None:
            body = b"not found\n"
            head = (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: %d\r\n" % len(body)
                    + (b"Connection: keep-alive" if keep_alive else b"Connection: close") + b"\r\n\r\n")
            return 404, head + (b"" if request.method == b"HEAD" else body)
        return static_answer(entry, request, versioned=hit.versioned, keep_alive=keep_alive)


def _has_version(query: bytes) -> bool:
    return query.startswith(b"v=") or b"&v=" in query


def routing_for(frontend: "ProxySettings", static_roots: "Iterable[Root]") -> BokehRouting:
    """The routing of a Bokeh fleet: session affinity follows ``--sticky``."""
    roots = list(static_roots)
    loop = asyncio.get_running_loop()
    static = StaticFiles(roots, offload=lambda work: loop.run_in_executor(None, work)) if roots else None
    return BokehRouting(static, by_session=frontend.sticky)


__all__ = ["BokehRouting", "StaticHit", "routing_for"]
