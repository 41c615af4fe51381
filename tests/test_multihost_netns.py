"""Fleets on several hosts behind ``fleet balance --resolve``, on a network of the test's own
(``netns.Network``: namespaces, veth pairs, a bridge; addresses in 10.213.7.0/24 that never
leave it), with a dnsmasq answering ``fleet.test``. Needs root and iproute2 (a skip locally, a
failure in CI). The browser is scripted (``multihost.Cluster.view``/``open_socket``): a page
view sends no cookie (the cross-site embed case) and its WebSocket carries the session token."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from dns_helpers import need_dnsmasq
from fleet.balance.dnsplan import FAILURE_RETRY_MAX
from multihost import FRONT, PORT, TTL, Cluster, Load, alive, wait_for
from netns import Network, need_netns
from support import require_tool

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow(seconds=90)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    need_netns()
    need_dnsmasq()
    with Network() as network:
        made = Cluster(network, tmp_path)
        try:
            yield made
        finally:
            made.close()


def test_thirty_page_views_make_thirty_sessions_spread_over_three_hosts(cluster: Cluster) -> None:
    cluster.start_hosts([1, 2, 3])
    cluster.start_dns([1, 2, 3])
    front = cluster.start_front()
    for host in ("h1", "h2", "h3"):
        front.wait_for_output(rf"host {host} at \S+ is up", timeout=20)
    made: Counter[str] = Counter()
    for _ in range(30):
        host, _, token = cluster.view()
        made[host] += 1
        cluster.open_socket(token).close()
    assert set(made) == {"h1", "h2", "h3"} and min(made.values()) >= 5, made
    for host, count in made.items():  # 1.00 session per page view: the WebSocket made none
        wait_for(lambda: cluster.sessions(host) == count, 10, f"{host}: {count} sessions, not {cluster.sessions(host)}")
    assert sum(cluster.sessions(h) for h in ("h1", "h2", "h3")) == 30


def test_a_host_added_to_dns_under_load_gets_new_sessions_within_its_ttl_and_five_seconds(cluster: Cluster) -> None:
    cluster.start_hosts([1, 2, 3, 4])
    cluster.start_dns([1, 2, 3])
    front = cluster.start_front()
    for host in ("h1", "h2", "h3"):
        front.wait_for_output(rf"host {host} at \S+ is up", timeout=20)
    load = Load(cluster)
    try:
        assert all(cluster.view()[0] != "h4" for _ in range(6))
        cluster.answer([1, 2, 3, 4])
        added = time.monotonic()
        wait_for(lambda: cluster.view()[0] == "h4", TTL + 5, "a page view on h4")
        took = time.monotonic() - added
    finally:
        load.stop()
    assert not load.failures(after=0.0)
    print(f"new host took {took:.1f} s to get its first session (TTL {TTL} s)")


def test_a_host_killed_under_load_fails_over_leaves_the_others_sessions_and_is_used_again(cluster: Cluster) -> None:
    cluster.start_hosts([1, 2, 3])
    cluster.start_dns([1, 2, 3])
    front = cluster.start_front()
    for host in ("h1", "h2", "h3"):
        front.wait_for_output(rf"host {host} at \S+ is up", timeout=20)
    sockets: dict[str, list] = {"h1": [], "h2": [], "h3": []}
    wait_for(lambda: all(len(s) >= 2 for s in sockets.values()) or _open_one(cluster, sockets), 60,
             "two open sessions on each host")
    load = Load(cluster)
    try:
        wait_for(lambda: len(load.results) > 20, 20, "load running")
        victim = cluster.hosts["h2"]
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: time.monotonic() - killed > 5, 10, "5 s of load after the kill")
    finally:
        load.stop()
    assert not load.failures(after=killed + 1.0), load.failures(after=killed + 1.0)[:5]
    assert sum(1 for t, _ in load.results if t > killed + 1.0) > 20
    for host in ("h1", "h3"):  # sessions elsewhere untouched
        assert all(alive(ws) for ws in sockets[host]), host
    victim.stop(timeout=10)  # reaps it, and its process group
    cluster.start_host(2).wait_for_output(r"ready: open http://", timeout=100)
    wait_for(lambda: len(re.findall(r"host h2 at \S+ is up", front.output())) >= 2, 20, "h2 up again")
    wait_for(lambda: cluster.view()[0] == "h2", 20, "a new session on h2")
    for ws in [*sockets["h1"], *sockets["h3"]]:
        ws.close()


def _open_one(cluster: Cluster, sockets: dict[str, list], per_host: int = 2) -> bool:
    host, _, token = cluster.view()
    if len(sockets[host]) < per_host:
        sockets[host].append(cluster.open_socket(token))
    return False


def test_dns_down_for_thirty_seconds_changes_nothing_and_its_new_answer_is_followed(cluster: Cluster) -> None:
    cluster.start_hosts([1, 2, 3])
    dns = cluster.start_dns([1, 2, 3])
    front = cluster.start_front()
    for host in ("h1", "h2", "h3"):
        front.wait_for_output(rf"host {host} at \S+ is up", timeout=20)
    # One open session on each host (an open WebSocket counts in least connections: one on h3
    # alone would keep new page views away from it).
    sockets: dict[str, list] = {"h1": [], "h2": [], "h3": []}
    wait_for(lambda: all(sockets.values()) or _open_one(cluster, sockets, per_host=1), 60, "a session on each host")
    dns.stop()
    stopped = time.monotonic()
    during: Counter[str] = Counter()
    while time.monotonic() - stopped < 30:
        during[cluster.view()[0]] += 1
        time.sleep(0.3)  # pacing the page views over the outage, not waiting for a state
    assert set(during) == {"h1", "h2", "h3"}, during
    front.wait_for_output(r"DNS fleet.test:8000: .*keeping the last good answer", timeout=1)
    # Nothing drained or forgotten for want of DNS. (A health probe timing out on a loaded
    # machine is the health check's business, not DNS's: "is down" is not looked at.)
    assert not re.search(r"is gone|draining", front.output().split("balance (pid")[1])
    dns.write(cluster.records([1, 2]))
    cluster.network.run("dns", dns.start)
    # Asked again within dnsplan.FAILURE_RETRY_MAX of its return, then h3 is drained.
    front.wait_for_output(r"host h3 left DNS: draining", timeout=FAILURE_RETRY_MAX + TTL + 10)
    after = Counter(cluster.view()[0] for _ in range(12))
    assert set(after) <= {"h1", "h2"} and after, after
    assert alive(sockets["h3"][0])  # a session on the draining host keeps going while it answers
    for ws in [*sockets["h1"], *sockets["h2"], *sockets["h3"]]:
        ws.close()


def _chromium_without_cookies(profile: Path):  # type: ignore[no-untyped-def]
    """A headless Chromium that keeps no cookie at all (the cross-site embed, at its strictest)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "browser"))
    from bokeh_page import CHROMIUM_FLAGS
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = require_tool("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"profile.default_content_setting_values.cookies": 2})
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(require_tool("chromedriver")), options=options)


def test_chromium_without_cookies_makes_one_session_per_page_view_across_three_hosts(cluster: Cluster,
                                                                                       tmp_path: Path) -> None:
    cluster.start_hosts([1, 2, 3])
    cluster.start_dns([1, 2, 3])
    front = cluster.start_front()
    for host in ("h1", "h2", "h3"):
        front.wait_for_output(rf"host {host} at \S+ is up", timeout=20)
    network = cluster.network
    # Chromium and chromedriver start from a thread in the front's namespace, and every call to
    # the driver runs there too (chromedriver listens on that namespace's loopback).
    driver = network.run("front", _chromium_without_cookies, tmp_path / "profile")
    from bokeh_page import _RENDERED  # on sys.path once the driver started
    views = 30
    try:
        for _ in range(views):
            network.run("front", driver.get, f"http://{FRONT}:{PORT}/bokeh_random")
            network.run("front", wait_for, lambda: driver.execute_script(_RENDERED), 30, "the plot rendered")
        assert network.run("front", driver.get_cookies) == []
    finally:
        network.run("front", driver.quit)
    counts = {host: 0 for host in ("h1", "h2", "h3")}
    wait_for(lambda: counts.update({h: cluster.sessions(h) for h in counts}) or sum(counts.values()) >= views,
             15, f"{views} sessions")
    # A page renders once its WebSocket has pulled the document: one that had landed on another
    # host would have made a second session there first.
    counts = {h: cluster.sessions(h) for h in counts}
    assert sum(counts.values()) == views, counts  # 1.00 session per page view
    assert all(count >= 3 for count in counts.values()), counts
    print(f"sessions per page view: {sum(counts.values()) / views:.2f}; per host: {counts}")
