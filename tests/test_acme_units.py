"""Automatic HTTPS without a CA: the pure decisions (lifecycle table, renewal time, backoff,
challenge choice), the proxy's challenge parsers, the state directory's permission rules and
locks, the options, and what ``fleet config`` writes for ``--domain``."""

from __future__ import annotations

import os
import random
import ssl
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.acme import paths, store
from fleet.acme.answers import client_hello_alpn, http01_answer, http01_token
from fleet.acme.manager import CertificateManager, retry_base
from fleet.acme.policy import (CERT_TABLE, HTTP01, RETRY_CAP, TLS_ALPN01, CertState, Lifetime, challenge_order,
                               is_due, renewal_time, retry_delay)
from fleet.config import ConfigError, build_config
from fleet.config.reloadplan import Way, plan_reload, ways_of
from fleet.config.sections.acme import parse_acme_directory, parse_domain, parse_email

TOKEN = "LDKlTlvoogWN3QyrKbBxHoL0MKawDdOyxHPdOykGmCg"


# -- the lifecycle -------------------------------------------------------------------------------
def test_every_certificate_state_is_reachable_and_none_is_a_dead_end() -> None:
    assert CERT_TABLE.reachable(CertState.NONE) == frozenset(CertState)
    assert CERT_TABLE.final_states() == frozenset()
    allowed = {(a, b) for a, b, ok in CERT_TABLE.walk() if ok}
    # A failure never goes back to "no certificate" once one serves, and an order never starts twice.
    assert (CertState.RENEW_FAILED, CertState.FAILED) not in allowed
    assert (CertState.RENEWING, CertState.FAILED) not in allowed
    assert (CertState.ORDERING, CertState.ORDERING) not in allowed
    assert (CertState.VALID, CertState.VALID) in allowed  # another fleet renewed it


# -- when to renew -----------------------------------------------------------------------------------
def test_renewal_comes_at_about_two_thirds_of_the_lifetime() -> None:
    life = Lifetime(1000.0, 1000.0 + 90 * 86400)
    for seed in range(200):
        at = renewal_time(life, random.Random(seed))
        assert 1000 + 60 * 86400 - 3 * 86400 <= at <= 1000 + 60 * 86400
    assert not is_due(life, 1000 + 59 * 86400) and is_due(life, 1000 + 61 * 86400) and is_due(None, 0)


def test_an_ari_window_wins_over_two_thirds() -> None:
    life = Lifetime(0.0, 90.0)
    for seed in range(50):
        assert 10.0 <= renewal_time(life, random.Random(seed), (10.0, 20.0)) <= 20.0


def test_retries_double_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    for failures, ceiling in [(1, 60), (2, 120), (3, 240), (12, RETRY_CAP), (40, RETRY_CAP)]:
        delays = [retry_delay(failures, rng) for _ in range(100)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not one fixed value


def test_a_serving_certificate_shortens_the_backoff_to_a_quarter_of_its_time_left() -> None:
    life = Lifetime(0.0, 4000.0)
    assert retry_delay(10, random.Random(2), lifetime=life, now=0.0) <= 1000
    # ... but never below the base: no hammering of a CA in the last minutes.
    assert retry_delay(10, random.Random(2), base=60, lifetime=life, now=3990.0) >= 30


@pytest.mark.parametrize("offered, listener, failed, expected", [
    ({HTTP01, TLS_ALPN01}, True, None, [HTTP01, TLS_ALPN01]),
    ({HTTP01, TLS_ALPN01}, False, None, [TLS_ALPN01]),
    ({HTTP01, TLS_ALPN01}, True, HTTP01, [TLS_ALPN01, HTTP01]),
    ({HTTP01, TLS_ALPN01}, True, TLS_ALPN01, [HTTP01, TLS_ALPN01]),
    ({HTTP01, "dns-01"}, False, None, []),
    ({"dns-01"}, True, None, []),
])
def test_challenge_order(offered: set[str], listener: bool, failed: str | None, expected: list[str]) -> None:
    assert challenge_order(frozenset(offered), listener, failed) == expected


# -- the proxy's side of a challenge -----------------------------------------------------------------
def test_http01_requests_are_recognised_and_nothing_else() -> None:
    assert http01_token(f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: a".encode()) == TOKEN.encode()
    assert http01_token(f"GET http://dash.test/.well-known/acme-challenge/{TOKEN} HTTP/1.1".encode()) == TOKEN.encode()
    assert http01_token(f"HEAD /.well-known/acme-challenge/{TOKEN} HTTP/1.0".encode()) == TOKEN.encode()
    assert http01_token(f"POST /.well-known/acme-challenge/{TOKEN} HTTP/1.1".encode()) is None
    assert http01_token(b"GET /index.html HTTP/1.1") is None
    for bad in ("../../etc/passwd", "a/b" * 10, "short", "x" * 200, "%2e%2e%2fsecret0123456789"):
        assert http01_token(f"GET /.well-known/acme-challenge/{bad} HTTP/1.1".encode()) == b""


def test_http01_answers_come_from_the_state_directory_only(tmp_path: Path) -> None:
    (tmp_path / "http-01").mkdir()
    (tmp_path / "http-01" / TOKEN).write_bytes(b"keyauth")
    (tmp_path / "secret").write_bytes(b"not for you")
    head = f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: dash.test".encode()
    answer = http01_answer(head, str(tmp_path))
    assert answer is not None and answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nkeyauth")
    head_only = http01_answer(head.replace(b"GET", b"HEAD", 1), str(tmp_path))
    assert head_only is not None and head_only.endswith(b"\r\n\r\n") and b"Content-Length: 7" in head_only
    missing = http01_answer(b"GET /.well-known/acme-challenge/" + b"A" * 43 + b" HTTP/1.1", str(tmp_path))
    assert missing is not None and missing.startswith(b"HTTP/1.1 404")
    sneaky = http01_answer(b"GET /.well-known/acme-challenge/../secret HTTP/1.1", str(tmp_path))
    assert sneaky is not None and b"not for you" not in sneaky
    assert http01_answer(b"GET / HTTP/1.1", str(tmp_path)) is None  # the redirect answers it
    assert http01_answer(head, None) is None  # no --domain: no challenges at all


def _client_hello(protocols: list[str]) -> bytes:
    """A real ClientHello from Python's ssl (the first record a client sends)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(protocols)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="dash.test")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    record = outgoing.read()
    assert record[0] == 22  # a handshake record
    return record[5:]


def test_the_alpn_offer_is_read_from_a_client_hello() -> None:
    assert client_hello_alpn(_client_hello(["acme-tls/1"])) == (b"acme-tls/1",)
    assert client_hello_alpn(_client_hello(["h2", "http/1.1"])) == (b"h2", b"http/1.1")
    hello = _client_hello(["acme-tls/1"])
    for cut in range(0, len(hello), 7):  # truncated or garbage: no offer, never an exception
        assert client_hello_alpn(hello[:cut]) in ((), (b"acme-tls/1",))
    assert client_hello_alpn(b"\x02" + hello[1:]) == ()


# -- the state directory ---------------------------------------------------------------------------
def test_the_state_directory_is_made_0700_with_its_parents(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "acme"
    store.ensure_dir(str(root))
    for directory in (tmp_path / "a", tmp_path / "a" / "b", root):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    path = root / "certificates" / "x" / "certificate.pem"
    store.write_private(str(path), b"pem")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and store.read_private(str(path)) == b"pem"
    store.check_tree(str(root))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o705, 0o701, 0o710])
def test_a_directory_group_or_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "acme"
    root.mkdir()
    os.chmod(root, mode)
    with pytest.raises(store.StateError, match=f"mode {mode:04o}.*chmod 0700"):
        store.ensure_dir(str(root))


def test_a_readable_file_or_a_symlink_inside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "acme"
    store.ensure_dir(str(root))
    key = root / "key.pem"
    key.write_bytes(b"k")
    os.chmod(key, 0o640)
    with pytest.raises(store.StateError, match="chmod 0600"):
        store.check_tree(str(root))
    os.chmod(key, 0o600)
    (root / "link").symlink_to(key)
    with pytest.raises(store.StateError, match="symbolic link"):
        store.check_tree(str(root))


def test_the_order_lock_is_exclusive_and_waits_are_bounded(tmp_path: Path) -> None:
    lock = str(tmp_path / "acme" / "lock")
    store.ensure_dir(str(tmp_path / "acme"))
    stop = threading.Event()
    with store.locked(lock, stop, 5):
        with pytest.raises(TimeoutError, match="another fleet"):
            with store.locked(lock, stop, 0.3):
                pass
    with store.locked(lock, stop, 0.3):  # released with the block
        pass


# -- options ---------------------------------------------------------------------------------------
def test_domain_names_are_checked() -> None:
    assert parse_domain("Dash.Example.COM.") == "dash.example.com"
    for bad in ("*.example.com", "localhost", "-a.example.com", "a..b", "1.2.3.4", "a_b.example.com",
                "x" * 64 + ".com", "dash.example.com/x", ""):
        with pytest.raises(ValueError):
            parse_domain(bad)
    assert parse_email("ops@example.com") == "ops@example.com"
    with pytest.raises(ValueError):
        parse_email("ops")
    assert parse_acme_directory("https://127.0.0.1:14000/dir") == "https://127.0.0.1:14000/dir"
    for bad in ("http://ca.example/dir", "https://ca example/dir", "ftp://x"):
        with pytest.raises(ValueError):
            parse_acme_directory(bad)


def test_domain_rules_against_other_options() -> None:
    config = build_config({"domain": ("dash.test",), "https_redirect_port": "80"}, {}, {}, app="app.py")
    assert config.acme.domain == ("dash.test",) and config.https_redirect_port == 80
    for cli, message in [
        ({"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}, "leave out --ssl-certfile"),
        ({"proxy": "nginx"}, "built-in proxy"),
        ({"no_proxy": True}, "built-in proxy"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_config({"domain": ("dash.test",), **cli}, {}, {}, app="app.py")


def test_the_derived_certificate_paths_survive_a_reload_unchanged(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    config = build_config({"domain": ("dash.test", "www.dash.test")}, {}, {}, app="app.py")
    running = replace(config, **paths.managed_certificate(config.acme, config.ssl_certfile, env))
    root = tmp_path / ".local" / "share" / "fleet" / "acme"
    assert running.ssl_certfile == running.ssl_keyfile == str(
        root / "certificates" / "acme-v02.api.letsencrypt.org-directory" / "dash.test" / "certificate.pem")
    assert running.acme_challenges == str(root / "challenges")
    again = replace(config, **paths.managed_certificate(config.acme, config.ssl_certfile, env))
    assert plan_reload(running, again).changes == ()
    assert ways_of("domain") == (Way.NOT_LIVE,) and ways_of("acme_directory") == (Way.NOT_LIVE,)
    assert paths.default_state_dir({"XDG_DATA_HOME": "/data", "HOME": "/h"}) == "/data/fleet/acme"


def test_retry_base_from_the_environment() -> None:
    assert retry_base({}) == 60.0 and retry_base({"FLEET_ACME_RETRY_BASE": "2"}) == 2.0
    for bad in ("0", "nan", "-1", "1e9"):
        with pytest.raises(ValueError):
            retry_base({"FLEET_ACME_RETRY_BASE": bad})


# -- generated deployments keep the state ----------------------------------------------------------
def test_generated_deployments_keep_the_acme_state() -> None:
    from fleet.configgen import docker, kubernetes, systemd
    from fleet.configgen.deployment import Deployment

    config = build_config({"domain": ("dash.example.com",), "https_redirect_port": "80", "workers": "2"}, {}, {},
                          app="app.py", command="config")
    target = Deployment(working_directory="/srv/app", fleet_executable="/usr/bin/fleet")
    unit = systemd.render(config, target)
    assert "StateDirectory=fleet" in unit and "StateDirectoryMode=0700" in unit
    assert "--acme-state /var/lib/fleet/acme" in unit
    dockerfile = docker.render_dockerfile(config, target)
    assert "VOLUME /var/lib/fleet" in dockerfile and "/var/lib/fleet/acme" in dockerfile
    assert "acme-state:/var/lib/fleet" in docker.render_compose(config, target)
    objects = kubernetes.objects(config, target)
    pod = objects[0]["spec"]["template"]["spec"]
    assert {"name": "acme-state", "mountPath": "/var/lib/fleet"} in pod["containers"][0]["volumeMounts"]
    assert any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    plain = build_config({"workers": "2"}, {}, {}, app="app.py", command="config")
    assert "StateDirectory" not in systemd.render(plain, target)
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in kubernetes.objects(plain, target))


def test_fleet_status_says_where_the_certificate_is() -> None:
    from fleet.acme.manager import status_line

    line = status_line({"domains": ["dash.test"], "state": "renew failed", "not_after": 86400.0,
                        "next_attempt": 1060.0, "last_error": "the CA refused: rejectedIdentifier"}, 1000.0)
    assert line == ("certificate (dash.test): renew failed, expires 1970-01-02 00:00:00 UTC, next order in 60 s; "
                    "last error: the CA refused: rejectedIdentifier")
    assert status_line({"domains": ["dash.test"], "state": "valid"}, 0.0) == "certificate (dash.test): valid"


def test_an_order_that_fails_backs_off_and_keeps_the_lifecycle_consistent(tmp_path: Path) -> None:
    """The manager against a CA address where nothing listens: each failure is counted as an
    error, moves FAILED -> ORDERING -> FAILED, and the next try is later each time."""
    import asyncio

    from fleet.config.sections.acme import AcmeSettings

    lines: list[str] = []
    now = [1000.0]

    async def changed() -> str | None:
        return None

    acme = AcmeSettings(domain=("dash.test",), acme_directory="https://127.0.0.1:1/dir", acme_state=str(tmp_path / "s"))
    manager = CertificateManager(acme, True, changed, lines.append, {"FLEET_ACME_RETRY_BASE": "10"},
                                 clock=lambda: now[0], rng=random.Random(3))
    manager.prepare()
    assert manager.state is CertState.NONE
    delays = []
    for attempt in range(1, 4):
        asyncio.run(manager._attempt())
        assert manager.state is CertState.FAILED and manager.failures == attempt
        delays.append(manager.next_attempt - now[0])
    assert manager.orders["error"] == 3 and manager.orders["valid"] == 0
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 20 <= delays[2] <= 40
    assert "TLS handshakes stay refused" in lines[-1] and "next try in" in lines[-1]
