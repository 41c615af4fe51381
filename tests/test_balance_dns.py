"""Discovery through DNS for ``fleet balance --resolve``: the refresh decision (``balance.dnsplan``,
pure, clock passed in), the option parsers, and real answers from a dnsmasq on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dns_helpers import Dnsmasq, need_dnsmasq
from fleet.balance.dnsplan import Answer, Resolution, TTLBounds, wanted
from fleet.balance.resolve import ResolveError, make_resolver, resolve
from fleet.rules import parse_resolver, parse_target
from support import free_port, wait_until

A, B = ("10.213.7.11", 8000), ("10.213.7.12", 8000)


def test_a_ttl_is_held_between_the_bounds() -> None:
    bounds = TTLBounds(2.0, 20.0)
    assert [bounds.clamp(t) for t in (0.0, 5.0, 86400.0)] == [2.0, 5.0, 20.0]
    assert [bounds.retry_after(n) for n in (1, 2, 3, 4, 50)] == [2.0, 4.0, 5.0, 5.0, 5.0]
    assert TTLBounds(10.0, 60.0).retry_after(3) == 10.0  # never sooner than the min
    assert TTLBounds(0.5, 3.0).retry_after(9) == 3.0  # nor later than the max
    for low, high in ((0.0, 5.0), (10.0, 5.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="min"):
            TTLBounds(low, high)


def test_a_name_is_asked_again_when_its_ttl_runs_out() -> None:
    resolution = Resolution("fleet.test:8000", TTLBounds(1.0, 30.0))
    assert resolution.due(0.0)
    assert resolution.answered(Answer(frozenset({A}), ttl=5.0), now=100.0)
    assert not resolution.due(104.9) and resolution.due(105.0)
    assert not resolution.answered(Answer(frozenset({A}), ttl=0.0), now=105.0)  # same set: no change
    assert resolution.next_at == 106.0  # a TTL of 0 is asked at the min, not in a loop
    assert resolution.answered(Answer(frozenset({A, B}), ttl=5.0), now=106.0)


def test_a_failing_or_empty_answer_keeps_the_last_good_one_and_backs_off() -> None:
    resolution = Resolution("fleet.test:8000", TTLBounds(1.0, 8.0))
    resolution.answered(Answer(frozenset({A, B}), ttl=5.0), now=0.0)
    resolution.failed("timeout", now=5.0)
    assert resolution.last_good == {A, B} and resolution.next_at == 6.0
    resolution.failed("timeout", now=6.0)
    assert resolution.next_at == 8.0
    assert not resolution.answered(Answer(frozenset(), ttl=5.0), now=8.0)  # NXDOMAIN: kept too
    assert resolution.last_good == {A, B} and resolution.failures == 3 and resolution.next_at == 12.0
    resolution.answered(Answer(frozenset({B}), ttl=3.0), now=12.0)
    assert resolution.last_good == {B} and resolution.failures == 0 and resolution.next_at == 15.0


def test_the_hosts_wanted_are_every_names_last_good_answer_and_the_command_lines() -> None:
    first, second = Resolution("a:1", TTLBounds()), Resolution("b:1", TTLBounds())
    first.answered(Answer(frozenset({A}), 5.0), 0.0)
    second.failed("SERVFAIL", 0.0)
    assert wanted([first, second], frozenset({B})) == {A, B}


@pytest.mark.parametrize("text, parsed", [("fleet.test:8000", ("fleet.test", 8000)),
                                          ("_fleet._tcp.app.svc.cluster.local", ("_fleet._tcp.app.svc.cluster.local", None)),
                                          ("[fd00::1]:80", ("fd00::1", 80))])
def test_a_resolve_target_is_a_name_and_port_or_an_srv_name(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_target(text) == parsed


@pytest.mark.parametrize("text", ["fleet.test", "fleet.test:0", "fleet.test:99999", ":80", "_fleet:80x", "_x"])
def test_a_bad_resolve_target_says_what_it_should_be(text: str) -> None:
    with pytest.raises(ValueError, match="NAME"):
        parse_target(text)


def test_a_resolver_is_an_ip_address_with_an_optional_port() -> None:
    assert parse_resolver("10.213.7.53") == ("10.213.7.53", 53)
    assert parse_resolver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_resolver("[::1]:5353") == ("::1", 5353)
    assert parse_resolver("::1") == ("::1", 53)
    for bad in ("dns.example", "1.2.3.4:x", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_resolver(bad)


def test_answers_from_a_real_dns_server_and_a_stopped_one_is_an_error_in_bounded_time(tmp_path: Path) -> None:
    need_dnsmasq()
    port = free_port()
    server = Dnsmasq(tmp_path, "127.0.0.1", port, ttl=7, extra=[
        "--host-record=h1.fleet.test,10.213.7.12", "--srv-host=_fleet._tcp.fleet.test,h1.fleet.test,8123"])
    server.write(["10.213.7.11 fleet.test", "10.213.7.13 fleet.test"])
    server.start()
    resolver = make_resolver((("127.0.0.1", port),))
    try:
        def answered() -> Answer | None:
            try:
                return asyncio.run(resolve(resolver, "fleet.test", 8000))
            except ResolveError:
                return None

        answer = wait_until(answered, 10, message="dnsmasq answers")
        assert answer == Answer(frozenset({("10.213.7.11", 8000), ("10.213.7.13", 8000)}), 7.0)
        srv = asyncio.run(resolve(resolver, "_fleet._tcp.fleet.test", None))
        assert srv.addresses == {("10.213.7.12", 8123)}
        assert asyncio.run(resolve(resolver, "other.test", 8000)).addresses == frozenset()  # NXDOMAIN
        server.write(["10.213.7.14 fleet.test"])
        server.reread()
        wait_until(lambda: asyncio.run(resolve(resolver, "fleet.test", 8000)).addresses == {("10.213.7.14", 8000)},
                   10, message="the new answer after SIGHUP")
        server.stop()
        started = time.monotonic()
        with pytest.raises(ResolveError):
            asyncio.run(resolve(resolver, "fleet.test", 8000))
        assert time.monotonic() - started < 5.0
    finally:
        server.stop()
