"""The proxy's choice of worker for a Bokeh session, on real UpstreamSet records (pure)."""

from __future__ import annotations

from fleet.balancer.bokeh_routing import BokehRouting
from fleet.balancer.head import forward_request
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.stats import ProxyStats
from fleet.balancer.trust import TrustedProxies


def upstreams(*ids: str) -> UpstreamSet:
    found = UpstreamSet(ProxyStats())
    for number, upstream_id in enumerate(ids):
        found.add(upstream_id, "127.0.0.1", 5100 + number, ready=True)
    return found


def request(url: bytes, *headers: tuple[bytes, bytes]):  # type: ignore[no-untyped-def]
    return forward_request(b"GET", url, False, True, False, [(b"Host", b"x"), *headers],
                           b"127.0.0.1", b"http", TrustedProxies(()), b"x")


def test_maker_while_it_can_serve_even_draining_then_rendezvous() -> None:
    routing = BokehRouting(None, by_session=True)
    pool = upstreams("w0", "w1", "w2")
    named = request(b"/app?bokeh-session-id=w1-abc")
    assert routing.affinity(named, pool, 0.0) == "w1"
    pool.set_draining("w1")
    assert routing.affinity(named, pool, 0.0) == "w1"  # its sessions still live there
    pool.set_ready("w1", False)
    assert routing.affinity(named, pool, 0.0) in {"w0", "w2"}
    outside = request(b"/app", (b"Bokeh-Session-Id", b"outside-1"))
    first = routing.affinity(outside, pool, 0.0)
    assert first in {"w0", "w2"} and routing.affinity(outside, pool, 0.0) == first
    assert routing.affinity(request(b"/app"), pool, 0.0) is None  # no session: cookie, then least-conn
    assert routing.affinity(request(b"/app/ws", (b"Sec-WebSocket-Protocol", b"bokeh, garbage")), pool, 0.0) is None


def test_headers_that_name_sessions_are_still_forwarded() -> None:
    forwarded = request(b"/app?x=1", (b"Bokeh-Session-Id", b"w0-a"), (b"If-None-Match", b'"e"'))
    assert b"Bokeh-Session-Id: w0-a" in forwarded.forward and b'If-None-Match: "e"' in forwarded.forward
    assert forwarded.query == b"x=1" and forwarded.bokeh_session == b"w0-a"
