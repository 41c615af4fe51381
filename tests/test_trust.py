"""Whose forwarding headers are believed, and the client address they resolve to (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.balancer.head import forward_request
from fleet.balancer.trust import TrustedProxies, is_forwarding_header, parse_cidr, resolve_from_headers
from fleet.config import ConfigError, build_config


def test_entries_are_normalised_and_bad_ones_explained() -> None:
    assert parse_cidr("10.1.2.3/8") == "10.0.0.0/8"
    assert parse_cidr("192.0.2.7") == "192.0.2.7/32"
    assert parse_cidr("::1") == "::1/128"
    assert parse_cidr("unix:") == "unix:"
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_cidr("proxy.example.com")


def test_nobody_is_trusted_by_default() -> None:
    trust = TrustedProxies()
    assert not trust
    assert not trust.is_trusted(b"127.0.0.1")
    assert trust.resolve(b"127.0.0.1", b"1.2.3.4", b"5.6.7.8") == b"127.0.0.1"


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    assert trust.resolve(b"203.0.113.9", b"127.0.0.1", b"10.0.0.1") == b"203.0.113.9"


def test_x_forwarded_for_is_walked_from_the_right_past_trusted_hops() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    # client forged 127.0.0.1; the real client is what the first trusted hop appended
    assert trust.resolve(b"10.0.0.1", b"127.0.0.1, 198.51.100.7, 10.0.0.2", None) == b"198.51.100.7"
    assert trust.resolve(b"10.0.0.1", b"10.0.0.3, 10.0.0.2", None) == b"10.0.0.3"  # all trusted: leftmost
    assert trust.resolve(b"10.0.0.1", b" 198.51.100.7 ", None) == b"198.51.100.7"


def test_real_ip_is_used_only_without_x_forwarded_for() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    assert trust.resolve(b"10.0.0.1", None, b"198.51.100.7") == b"198.51.100.7"
    assert trust.resolve(b"10.0.0.1", b"192.0.2.1", b"198.51.100.7") == b"192.0.2.1"
    assert trust.resolve(b"10.0.0.1", None, b"garbage") == b"10.0.0.1"


def test_a_malformed_hop_stops_the_walk_at_the_last_trusted_one() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    assert trust.resolve(b"10.0.0.1", b"198.51.100.7, bogus, 10.0.0.2", None) == b"10.0.0.2"
    assert trust.resolve(b"10.0.0.1", b"bogus", None) == b"10.0.0.1"


def test_ipv6_and_mapped_ipv4_peers() -> None:
    trust = TrustedProxies(["::1", "192.0.2.0/24"])
    assert trust.is_trusted(b"::1") and trust.is_trusted("::ffff:192.0.2.5")
    assert trust.resolve(b"::1", b"2001:db8::7", None) == b"2001:db8::7"
    assert trust.resolve(b"::1", b"[2001:db8::7]", None) == b"2001:db8::7"


def test_unix_socket_peers_only_when_named() -> None:
    assert not TrustedProxies(["127.0.0.1"]).is_trusted(b"unix")
    assert TrustedProxies(["unix:"]).is_trusted(b"unix")


def test_resolve_from_raw_headers_merges_repeated_fields() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    headers = [(b"X-Forwarded-For", b"198.51.100.7"), (b"x-forwarded-for", b"10.0.0.5")]
    assert resolve_from_headers(trust, b"10.0.0.1", headers) == b"198.51.100.7"
    assert resolve_from_headers(trust, b"203.0.113.1", headers) == b"203.0.113.1"


@given(st.lists(st.ip_addresses(v=4).map(str), max_size=40))
def test_resolution_never_lands_on_a_forged_hop_left_of_an_untrusted_one(hops: list[str]) -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    resolved = trust.resolve(b"10.0.0.1", ", ".join(hops).encode(), None).decode()
    untrusted = [hop for hop in hops[-32:] if not hop.startswith("10.")]
    if untrusted:
        assert resolved == untrusted[-1]
    elif hops:
        assert resolved == hops[-32:][0]


def test_forwarding_headers_include_every_x_forwarded_name() -> None:
    for name in (b"x-forwarded-port", b"x-forwarded-prefix", b"x-forwarded-ssl", b"x-scheme",
                 b"forwarded", b"x-real-ip", b"front-end-https", b"x-url-scheme", b"x-client-ip"):
        assert is_forwarding_header(name)
    assert not is_forwarding_header(b"x-request-id")


CLAIMS = [(b"X-Scheme", b"https"), (b"Forwarded", b"for=127.0.0.1;proto=https"),
          (b"X-Forwarded-For", b"127.0.0.1"), (b"X-Forwarded-Proto", b"https"),
          (b"X-Forwarded-Host", b"evil.example"), (b"X-Forwarded-Port", b"443"),
          (b"X-Forwarded-Prefix", b"/admin"), (b"X-Forwarded-Ssl", b"on"), (b"X-Real-IP", b"127.0.0.1"),
          (b"X-Url-Scheme", b"https"), (b"Front-End-Https", b"on"), (b"X-Client-IP", b"127.0.0.1"),
          (b"True-Client-IP", b"127.0.0.1")]


def forward(peer: bytes, trust: TrustedProxies, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    request = forward_request(b"GET", b"/", False, True, False, [(b"Host", b"app.test"), *headers],
                              peer, b"http", trust, b"127.0.0.1:5006")
    return request.forward.split(b"\r\n")[1:-2]


def test_forged_forwarding_headers_from_an_untrusted_peer_are_replaced() -> None:
    lines = forward(b"203.0.113.9", TrustedProxies(["10.0.0.0/8"]), CLAIMS)
    assert sorted(lines) == sorted([b"Host: app.test", b"X-Forwarded-For: 203.0.113.9",
                                    b"X-Forwarded-Proto: http", b"X-Forwarded-Host: app.test",
                                    b"X-Real-IP: 203.0.113.9"])


def test_a_trusted_proxy_is_believed_and_extended_and_x_real_ip_is_resolved() -> None:
    trust = TrustedProxies(["10.0.0.0/8"])
    request = forward_request(
        b"GET", b"/", False, True, False,
        [(b"Host", b"app.test"), (b"X-Forwarded-For", b"127.0.0.1, 198.51.100.7"),
         (b"X-Real-IP", b"127.0.0.1"), (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Prefix", b"/app")],
        b"10.0.0.2", b"http", trust, b"127.0.0.1:5006")
    lines = request.forward.split(b"\r\n")[1:-2]
    assert b"X-Forwarded-For: 127.0.0.1, 198.51.100.7, 10.0.0.2" in lines
    assert b"X-Real-IP: 198.51.100.7" in lines  # not the client's own X-Real-IP: 127.0.0.1
    assert b"X-Forwarded-Proto: https" in lines and b"X-Forwarded-Prefix: /app" in lines
    assert request.client == b"198.51.100.7"


def test_use_xheaders_is_a_deprecated_alias_for_trusting_loopback_and_private_peers() -> None:
    config = build_config({"use_xheaders": True, "trusted_proxy": ("192.0.2.1",)}, {}, {}, command="balance")
    trust = TrustedProxies(config.trusted_proxies())
    assert trust.is_trusted(b"127.0.0.1") and trust.is_trusted(b"10.1.2.3") and trust.is_trusted(b"192.0.2.1")
    assert not trust.is_trusted(b"203.0.113.9")
    assert build_config({}, {}, {}, command="balance").trusted_proxies() == ()


def test_bad_trusted_proxy_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--trusted-proxy .*not an IP address"):
        build_config({"trusted_proxy": ("example.com",)}, {}, {}, command="balance")
    config = build_config({}, {"FLEET_TRUSTED_PROXY": "10.0.0.0/8, ::1"}, {}, command="balance")
    assert config.trusted_proxy == ("10.0.0.0/8", "::1/128")


def test_the_affinity_cookie_is_secure_under_tls_and_carries_an_opaque_id() -> None:
    from fleet.balancer.policy import UpstreamSet
    from fleet.balancer.stats import ProxyStats

    plain = UpstreamSet(ProxyStats()).add("b0", "10.0.0.5", 80)
    tls = UpstreamSet(ProxyStats(), secure_cookie=True).add("b0", "10.0.0.5", 80)
    assert plain.cookie == b"Set-Cookie: fleet_affinity=b0; Path=/; HttpOnly; SameSite=Lax"
    assert tls.cookie == plain.cookie + b"; Secure"


def test_fleet_balance_targets_get_opaque_ids_in_order() -> None:
    from fleet.balancer.standalone import target_id

    assert [target_id(i) for i in range(3)] == ["b0", "b1", "b2"]


def test_bokehs_ssl_password_name_is_accepted_and_fleets_wins() -> None:
    assert build_config({}, {"BOKEH_SSL_PASSWORD": "b"}, {}, command="balance").ssl_password == "b"
    both = {"BOKEH_SSL_PASSWORD": "b", "FLEET_SSL_PASSWORD": "f"}
    assert build_config({}, both, {}, command="balance").ssl_password == "f"


def test_tls_extras_need_tls() -> None:
    with pytest.raises(ConfigError, match="--hsts needs TLS"):
        build_config({"hsts": "60"}, {}, {}, command="balance")
    with pytest.raises(ConfigError, match="--https-redirect-port needs TLS"):
        build_config({"https_redirect_port": "8080"}, {}, {}, command="balance")
    with pytest.raises(ConfigError, match="whole number of seconds"):
        build_config({"hsts": "0", "ssl_certfile": "c", "ssl_keyfile": "k"}, {}, {}, command="balance")
    config = build_config({"hsts": "2h", "ssl_certfile": "c", "ssl_keyfile": "k"}, {}, {}, command="balance")
    assert config.hsts == 7200


def test_worker_environment_drops_fleets_settings_and_tls_passwords() -> None:
    from fleet.supervisor.command import worker_environment

    parent = {"PATH": "/bin", "FLEET_SSL_PASSWORD": "x", "BOKEH_SSL_PASSWORD": "y", "FLEET_PORT": "80",
              "BOKEH_SECRET_KEY": "kept: the app's own", "DATABASE_URL": "kept"}
    env = worker_environment(parent, {"PORT": "5100", "FLEET_WORKER_ID": "w0"})
    assert env == {"PATH": "/bin", "BOKEH_SECRET_KEY": "kept: the app's own", "DATABASE_URL": "kept",
                   "PORT": "5100", "FLEET_WORKER_ID": "w0"}


def test_workers_are_told_the_trusted_proxies() -> None:
    from fleet.appspec import detect
    from fleet.supervisor.command import worker_command
    from fleet.supervisor.settings import SupervisorViews

    app = str(__import__("pathlib").Path(__file__).parent / "apps" / "backend.py")
    config = build_config({"trusted_proxy": ("192.0.2.0/24",), "no_proxy": True}, {}, {}, command="up", app=app)
    argv = worker_command(SupervisorViews.of(config), detect(app), 0, 1).argv
    assert argv[argv.index("--trusted-proxy") + 1] == "192.0.2.0/24"
