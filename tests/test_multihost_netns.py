"""Fleets on several hosts behind ``fleet balance --resolve``, on a network of the test's own
(``netns.Network``: namespaces, veth pairs, a bridge; addresses in 10.213.7.0/24 that never
leave it), with a dnsmasq answering ``fleet.test``. Needs root and iproute2 (a skip locally, a
failure in CI). The browser is scripted (``multihost.Cluster.view``/``open_socket``): a page
view sends no cookie (the cross-site embed case) and its WebSocket carries the session token."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from dns_helpers import need_dnsmasq
from multihost import Cluster, wait_for
from netns import Network, need_netns

pytestmark = pytest.mark.timeout(180)


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
