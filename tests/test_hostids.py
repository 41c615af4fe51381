"""Host ids in session ids and the affinity cookie (``fleet up --host-id``): the pure rules,
the proxy's reading of them, and one fleet that makes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import websocket  # websocket-client
from hypothesis import given
from hypothesis import strategies as st

from fleet.balancer.bokeh_routing import BokehRouting
from fleet.balancer.head import Request
from fleet.balancer.policy import UpstreamSet, affinity_from_cookie
from fleet.balancer.stats import ProxyStats
from fleet.config import ConfigError, build_config
from fleet.health import ready
from fleet.hostids import local_part, split_host, valid_host_id, worker_key
from support import EXAMPLES, http_get
from test_bokeh_parity import TOKEN, session_id_of, start

HOST_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
WORKER_IDS = st.from_regex(r"g[1-9][0-9]{0,2}w[0-9]{1,3}", fullmatch=True)


@pytest.mark.parametrize("good", ["h1", "fleet-app-7d9f8c6b5-x2kq9", "A_b-3", "x" * 63])
def test_a_dns_label_is_a_host_id(good: str) -> None:
    assert valid_host_id(good) == good


@pytest.mark.parametrize("bad, why", [("h1.example", "'.'"), ("", "letters"), ("-h1", "starting"),
                                      ("h~1", "letters"), ("h 1", "letters"), ("x" * 64, "63"),
                                      ("h1;x=y", "letters")])
def test_a_host_id_that_would_break_an_id_or_a_cookie_is_refused_with_its_reason(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        valid_host_id(bad)


@given(HOST_IDS, WORKER_IDS, st.text(alphabet="abcdefXYZ0123456789", min_size=1, max_size=44))
def test_the_host_and_the_worker_read_back_from_a_session_id(host: str, worker: str, rest: str) -> None:
    session_id = worker_key(host, worker) + "-" + rest
    assert "." not in session_id  # Bokeh's rule: a signed id is split at '.'
    assert split_host(session_id) == (host, worker + "-" + rest)
    assert local_part(session_id) == worker + "-" + rest
    assert local_part(session_id, host) == worker + "-" + rest
    assert local_part(session_id, host + "x") == session_id  # another host's: no worker here


def test_ids_without_a_host_stay_as_they_were() -> None:
    assert worker_key(None, "g1w0") == "g1w0"
    assert split_host("g1w0-abc") == (None, "g1w0-abc")
    assert split_host("outside~") == (None, "outside~")  # nothing after the separator
    assert split_host("bad.host~g1w0-x") == (None, "bad.host~g1w0-x")


def test_the_affinity_cookie_names_host_and_worker_and_each_host_reads_its_worker() -> None:
    upstreams = UpstreamSet(ProxyStats(), cookie_host="h2")
    upstream = upstreams.add("g1w1", "127.0.0.1", 1, ready=True)
    assert b"fleet_affinity=h2~g1w1;" in upstream.cookie
    assert affinity_from_cookie(b"a=b; fleet_affinity=h2~g1w1") == "g1w1"
    assert affinity_from_cookie(b"fleet_affinity=h2~g1w1", "h2") == "g1w1"
    assert affinity_from_cookie(b"fleet_affinity=h3~g1w1", "h2") == "h3~g1w1"  # names no worker here
    assert affinity_from_cookie(b"fleet_affinity=g1w1") == "g1w1"  # a fleet without --host-id
    assert b"fleet_affinity=g1w1;" in UpstreamSet(ProxyStats()).add("g1w1", "127.0.0.1", 1).cookie


def test_a_host_proxy_sends_a_host_prefixed_session_to_the_worker_in_it() -> None:
    upstreams = UpstreamSet(ProxyStats(), cookie_host="h1")
    for index in range(3):
        upstreams.add(f"g1w{index}", "127.0.0.1", 5000 + index, ready=True)
    routing = BokehRouting(None, by_session=True)
    for worker in ("g1w0", "g1w1", "g1w2"):
        request = Request()
        request.query = f"bokeh-session-id=h1~{worker}-AbCdEf123".encode()
        assert routing.affinity(request, upstreams, now=0.0) == worker


def test_the_host_id_is_an_option_checked_like_the_others() -> None:
    assert build_config({"host_id": "h1"}, {}, {}, app="x.py").supervisor.host_id == "h1"
    assert build_config({}, {}, {}, app="x.py").supervisor.host_id is None
    with pytest.raises(ConfigError, match="host-id"):
        build_config({"host_id": "h1.example.com"}, {}, {}, app="x.py")
    for other in ({"proxy": "nginx"}, {"no_proxy": True}):
        with pytest.raises(ConfigError, match="--host-id needs the built-in proxy"):
            build_config({"host_id": "h1", **other}, {}, {}, app="x.py")


def test_the_ready_probe_names_the_host() -> None:
    status, _, body = ready([], 2, host_id="h7")
    assert status == 503 and json.loads(body)["host_id"] == "h7"
    assert "host_id" not in json.loads(ready([], 2)[2])


def test_worker_session_ids_carry_host_and_worker_under_bokehs_rules() -> None:
    pytest.importorskip("bokeh")
    from bokeh.util.token import check_session_id_signature

    from fleet.worker.bokeh import worker_session_id_maker

    unsigned = worker_session_id_maker("g2w1", "pod-a")()
    assert unsigned.startswith("pod-a~g2w1-") and "." not in unsigned
    signed = worker_session_id_maker("g2w1", "pod-a")(secret_key=b"k" * 32, signed=True)
    assert signed.startswith("pod-a~g2w1-") and signed.count(".") == 1
    assert check_session_id_signature(signed, secret_key=b"k" * 32, signed=True)
    with pytest.raises(ValueError, match="'.'"):
        worker_session_id_maker("g2w1", "pod.a")


@pytest.mark.slow
def test_a_fleet_with_a_host_id_routes_its_sessions_and_says_which_host_it_is(tmp_path: Path) -> None:
    fleet = start(tmp_path, str(EXAMPLES / "bokeh_random"), "--host-id", "h1", workers=2)
    with fleet.proc:
        url = f"http://127.0.0.1:{fleet.port}/bokeh_random"
        status, headers, page = http_get(url)
        assert status == 200
        session_id = session_id_of(page)
        host, rest = split_host(session_id)
        maker = rest.split("-", 1)[0]
        assert host == "h1" and maker in ("g1w0", "g1w1"), session_id
        assert f"fleet_affinity=h1~{maker}" in headers["Set-Cookie"]
        token = TOKEN.search(page.decode()).group(1)  # type: ignore[union-attr]
        for _ in range(3):  # the WebSocket, without a cookie, reaches the maker: no new session
            ws = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/bokeh_random/ws", timeout=10,
                                             subprotocols=["bokeh", token], origin=f"http://localhost:{fleet.port}")
            ws.recv()
            ws.close()
        fleet.proc.wait_for_output(rf"(?m)^{maker}:\d+ \| session created on {maker}", timeout=10)
        assert fleet.proc.output().count("session created on") == 1
        ready_body = json.loads(http_get(f"http://127.0.0.1:{fleet.port}/_fleet/health/ready")[2])
        assert ready_body["host_id"] == "h1"
