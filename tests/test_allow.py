"""Host and Origin allowlists follow Bokeh's rules (checked against Bokeh's own functions)."""

from __future__ import annotations

import bokeh.server.util as bokeh_util
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.balancer.allow import Allowlist, validate_host_entry, validate_origin_entry
from fleet.balancer.head import HeadError, forward_request
from fleet.balancer.trust import TrustedProxies
from fleet.config import ConfigError, build_config



def test_a_name_without_a_port_means_port_80() -> None:
    origins = Allowlist(["app.example.com"])
    assert origins.allows_origin(b"http://app.example.com")
    assert origins.allows_origin(b"https://app.example.com")  # Bokeh ignores the scheme
    assert origins.allows_origin(b"http://app.example.com:80")
    assert not origins.allows_origin(b"https://app.example.com:8443")
    assert not origins.allows_origin(b"http://app.example.com.evil.net")
    assert not origins.allows_origin(b"http://evil.app.example.com")


def test_wildcards_match_one_label_each_and_star_matches_everything() -> None:
    corp = Allowlist(["*.corp.example:5006"])
    assert corp.allows_origin(b"http://a.corp.example:5006")
    assert not corp.allows_origin(b"http://a.b.corp.example:5006")
    assert not corp.allows_origin(b"http://a.corp.example:5007")
    assert Allowlist(["*"]).allows_origin(b"https://anything.test:1")
    assert Allowlist(["192.168.*.*"]).allows_host_header(b"192.168.4.5")
    assert Allowlist(["app.test:*"]).allows_host_header(b"app.test:1234")
    assert not corp.allows_host_header(b"*.corp.example:5006")  # a pattern is not a host


def test_hostile_origins_are_refused() -> None:
    origins = Allowlist(["app.example.com:5006"])
    for origin in (b"null", b"", b"http://user@app.example.com:5006", b"app.example.com:5006",
                   b"http://app.example.com:5006\xff", b"http://[::1", b"file://"):
        assert not origins.allows_origin(origin), origin


def test_entries_bokeh_refuses_are_refused_with_a_reason() -> None:
    assert validate_origin_entry("App.Example.com:5006") == "app.example.com:5006"
    for bad in ("", ":80", "host:port", "https://app.example.com", "a b", "host:99999"):
        with pytest.raises(ValueError):
            validate_origin_entry(bad)
    with pytest.raises(ValueError, match="Bokeh does not accept"):
        validate_origin_entry("app.example.com:*")
    assert validate_host_entry("app.example.com:*") == "app.example.com:*"
    with pytest.raises(ConfigError, match="--allow-websocket-origin"):
        build_config({"allow_websocket_origin": ("http://x.test",)}, {}, {}, command="balance")


NAMES = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=3).map(".".join)
PORTS = st.sampled_from(["", ":80", ":8080"])


@given(st.lists(st.tuples(NAMES, PORTS).map("".join) | st.just("*"), min_size=1, max_size=3),
       st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(".".join), PORTS)
def test_same_answers_as_bokehs_check_allowlist(entries: list[str], name: str, port: str) -> None:
    entries = [validate_origin_entry(entry) for entry in entries]
    bokeh_list = bokeh_util.create_hosts_allowlist(entries, None)
    host = name + port
    assert Allowlist(entries).allows(host) == bokeh_util.check_allowlist(host, bokeh_list)


def forward(url: bytes, host: bytes = b"app.test:5006"):  # type: ignore[no-untyped-def]
    return forward_request(b"GET", url, False, True, False, [(b"Host", host)], b"203.0.113.9",
                           b"http", TrustedProxies(), b"127.0.0.1:5006")


def test_absolute_form_target_is_rewritten_and_its_authority_replaces_host() -> None:
    request = forward(b"http://evil.test/admin?x=1")
    assert request.forward.startswith(b"GET /admin?x=1 HTTP/1.1\r\n")
    assert request.host == b"evil.test" and request.path == b"/admin"
    lines = request.forward.split(b"\r\n")
    assert b"Host: evil.test" in lines and b"Host: app.test:5006" not in lines
    assert b"X-Forwarded-Host: evil.test" in lines
    assert forward(b"https://app.test:5006").forward.startswith(b"GET / HTTP/1.1\r\n")
    assert forward(b"http://app.test?q").forward.startswith(b"GET /?q HTTP/1.1\r\n")


@pytest.mark.parametrize("url", [b"http:///x", b"http://user@app.test/", b"http://a b/", b"http://:80/",
                                 b"http://app.test,evil.test/"])
def test_malformed_authorities_are_400(url: bytes) -> None:
    with pytest.raises(HeadError) as caught:
        forward(url)
    assert caught.value.status == 400
