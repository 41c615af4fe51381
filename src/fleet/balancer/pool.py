"""Keep-alive connections to workers: the idle pool of each ``Upstream`` and new connections.

Like nginx's ``keepalive N`` in an ``upstream`` block: at most ``MAX_IDLE_PER_UPSTREAM`` idle
connections per worker; a worker that goes away (not ready, removed, or one of its pooled
connections found dead) loses its whole pool, since the others would only fail later
requests the same way.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fleet.balancer.policy import Upstream
from fleet.tasks import with_timeout

if TYPE_CHECKING:
    from fleet.balancer.context import ProxyContext
    from fleet.balancer.upstream import UpstreamConnection

# Idle keep-alive connections kept per worker (nginx's ``keepalive 64`` in the bench config).
MAX_IDLE_PER_UPSTREAM = 64


def take_idle(upstream: Upstream) -> "UpstreamConnection | None":
    idle = upstream.idle
    while idle:
        conn = idle.pop()
        if not conn.closed:
            return conn
    return None


def put_idle(proxy: "ProxyContext", conn: "UpstreamConnection") -> bool:
    """Pool ``conn`` if its worker still takes traffic and the pool has room."""
    upstream = conn.upstream
    if upstream.ready and not proxy.closing and len(upstream.idle) < MAX_IDLE_PER_UPSTREAM:
        upstream.idle.append(conn)
        return True
    return False


def forget(upstream: Upstream, conn: "UpstreamConnection") -> None:
    """An idle connection closed by the worker."""
    try:
        upstream.idle.remove(conn)
    except ValueError:
        pass


def close_idle(upstream: Upstream) -> None:
    idle, upstream.idle = upstream.idle, []
    for conn in idle:
        conn.close()


async def open_connection(proxy: "ProxyContext", upstream: Upstream, timeout: float) -> "UpstreamConnection":
    """A new connection to ``upstream``. Raises ``OSError`` or ``asyncio.TimeoutError``."""
    from fleet.balancer.upstream import UpstreamConnection

    # fleet.tasks.with_timeout, not asyncio.wait_for: a cancel at shutdown is never swallowed.
    _, conn = await with_timeout(
        proxy.loop.create_connection(lambda: UpstreamConnection(proxy, upstream), upstream.host, upstream.port),
        timeout)
    return conn


__all__ = ["MAX_IDLE_PER_UPSTREAM", "close_idle", "forget", "open_connection", "put_idle", "take_idle"]
