"""The front tier's pure rules: which host a request goes to (``balance.routing``), which hosts
the proxy holds, ready or draining (``balance.hosts``), and what a probe answer says
(``balance.hostprobe.parse_answer``)."""

from __future__ import annotations

import base64
import json
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from fleet.balance.hostprobe import parse_answer
from fleet.balance.hosts import HostTable, HostView, changes
from fleet.balance.routing import HostRouting
from fleet.balancer.head import Request
from fleet.balancer.policy import UpstreamSet
from fleet.balancer.stats import ProxyStats

A, B, C = ("10.213.7.11", 8000), ("10.213.7.12", 8000), ("10.213.7.13", 8000)


def hosts(*ids: str) -> UpstreamSet:
    upstreams = UpstreamSet(ProxyStats())
    for index, host in enumerate(ids):
        upstreams.add(host, "10.213.7.%d" % (11 + index), 8000, ready=True)
    return upstreams


def request(query: bytes = b"", protocol: bytes | None = None, header: bytes | None = None,
            cookie: bytes | None = None) -> Request:
    made = Request()
    made.query, made.bokeh_protocol, made.bokeh_session, made.affinity_cookie = query, protocol, header, cookie
    return made


def token_for(session_id: str) -> bytes:
    payload = base64.urlsafe_b64encode(json.dumps({"session_id": session_id}).encode()).rstrip(b"=")
    return payload + b".signature"


def test_a_session_goes_to_the_host_in_its_id_wherever_it_is_named() -> None:
    upstreams, routing = hosts("h1", "h2", "h3"), HostRouting()
    for host in ("h1", "h2", "h3"):
        session = f"{host}~g1w0-AbC123"
        assert routing.affinity(request(query=f"bokeh-session-id={session}".encode()), upstreams, 0.0) == host
        assert routing.affinity(request(header=session.encode()), upstreams, 0.0) == host
        assert routing.affinity(request(protocol=b"bokeh, " + token_for(session)), upstreams, 0.0) == host


def test_a_draining_host_keeps_its_sessions_and_a_down_one_hands_them_to_the_hash() -> None:
    upstreams, routing = hosts("h1", "h2", "h3"), HostRouting()
    upstreams.set_draining("h2")
    named = request(header=b"h2~g1w1-xyz")
    assert routing.affinity(named, upstreams, 0.0) == "h2"
    upstreams.set_ready("h2", False)
    moved = routing.affinity(named, upstreams, 0.0)
    assert moved in ("h1", "h3")
    assert routing.affinity(request(query=b"bokeh-session-id=h2~g1w1-xyz"), upstreams, 0.0) == moved


@given(st.text(alphabet="abcdefghijkABC0123456789-~", min_size=1, max_size=60))
def test_an_id_without_a_known_host_lands_on_one_host_for_the_page_and_its_websocket(session: str) -> None:
    upstreams, routing = hosts("h1", "h2", "h3"), HostRouting()
    by_header = routing.affinity(request(header=session.encode()), upstreams, 0.0)
    by_token = routing.affinity(request(protocol=b"bokeh, " + token_for(session)), upstreams, 0.0)
    assert by_header == by_token
    assert by_header in ("h1", "h2", "h3")


def test_outside_ids_spread_over_the_hosts_and_only_a_leaving_hosts_ones_move() -> None:
    upstreams, routing = hosts("h1", "h2", "h3"), HostRouting()
    ids = [f"outside-{n}" for n in range(300)]
    before = {i: routing.affinity(request(header=i.encode()), upstreams, 0.0) for i in ids}
    assert min(Counter(before.values()).values()) > 60
    upstreams.set_ready("h3", False)
    after = {i: routing.affinity(request(header=i.encode()), upstreams, 0.0) for i in ids}
    assert all(after[i] == before[i] for i in ids if before[i] != "h3")


def test_the_hosts_cookie_names_the_host_and_nothing_else_picks_one() -> None:
    upstreams, routing = hosts("h1", "h2"), HostRouting()
    assert routing.affinity(request(cookie=b"x=1; fleet_affinity=h2~g1w0"), upstreams, 0.0) == "h2"
    assert routing.affinity(request(cookie=b"fleet_affinity=h9~g1w0"), upstreams, 0.0) is None
    assert routing.affinity(request(cookie=b"fleet_affinity=g1w0"), upstreams, 0.0) is None
    assert routing.affinity(request(), upstreams, 0.0) is None
    # A session named beats the cookie: a page of host h1 embedded in a page that went to h2.
    assert routing.affinity(request(header=b"h1~g1w0-a", cookie=b"fleet_affinity=h2~g1w0"), upstreams, 0.0) == "h1"


def test_a_host_is_held_once_healthy_under_its_own_id_and_drained_when_dns_drops_it() -> None:
    table = HostTable()
    table.name(frozenset({A, B}))
    assert table.view() == {}  # nothing answered yet: no id known
    table.probed(A, True, "h1")
    table.probed(B, False, None)
    assert table.view() == {"h1": HostView(A, ready=True, draining=False)}
    table.probed(B, True, "h2")
    table.name(frozenset({A}))  # h2 left DNS
    assert table.view()["h2"] == HostView(B, ready=True, draining=True)
    table.probed(B, True, "h2")
    assert "h2" in table.view()  # still answering: its sessions keep going
    table.probed(B, False, None)
    assert "h2" not in table.view()  # gone for good
    table.name(frozenset({A, B}))
    assert "h2" not in table.view()  # back in DNS: held again once it answers
    table.probed(B, True, "h2")
    assert table.view()["h2"] == HostView(B, ready=True, draining=False)


def test_a_named_host_that_stops_answering_is_kept_down_and_used_again_when_back() -> None:
    table = HostTable()
    table.name(frozenset({A, B}))
    table.probed(A, True, "h1")
    table.probed(B, True, "h2")
    table.probed(A, False, None)  # killed
    assert table.view()["h1"] == HostView(A, ready=False, draining=False)
    table.probed(A, True, "h1")
    assert table.view()["h1"].ready


def test_one_host_at_two_addresses_is_one_upstream_and_a_fleet_without_id_is_its_address() -> None:
    table = HostTable()
    v6 = ("fd00::11", 8000)
    table.name(frozenset({A, v6, C}))
    table.probed(A, False, "h1")
    table.probed(v6, True, "h1")
    table.probed(C, True, None)
    view = table.view()
    assert view["h1"] == HostView(v6, ready=True, draining=False)
    assert view["10.213.7.13:8000"].ready


def test_changes_add_set_ready_drain_and_remove_in_an_order_the_proxy_can_take() -> None:
    up, down = HostView(A, True, False), HostView(A, False, False)
    assert changes({}, {"h1": up}) == [("add", "h1", up)]
    assert changes({"h1": up}, {"h1": down}) == [("ready", "h1", down), ("drain", "h1", down)]
    drained = HostView(A, True, True)
    assert changes({"h1": up}, {"h1": drained}) == [("drain", "h1", drained)]
    moved = HostView(B, True, False)
    assert changes({"h1": up}, {"h1": moved}) == [("add", "h1", moved)]
    assert changes({"h1": up}, {}) == [("remove", "h1", None)]


def test_a_probe_answer_is_ready_on_2xx_and_names_a_valid_host_only() -> None:
    body = b'{"status": "ready", "host_id": "h1"}'
    assert parse_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body) == (True, "h1")
    assert parse_answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\n" + body) == (False, "h1")
    assert parse_answer(b"HTTP/1.1 200 OK\r\n\r\n{\"host_id\": \"a.b\"}") == (True, None)
    assert parse_answer(b"HTTP/1.1 200 OK\r\n\r\nnot json") == (True, None)
    assert parse_answer(b"garbage") == (False, None)
    assert parse_answer(b"") == (False, None)
