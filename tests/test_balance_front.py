"""``fleet balance --hosts``: the front tier across fleets started with ``--host-id``, on
loopback (the DNS-discovered, several-address version is tests/test_multihost_netns.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import websocket  # websocket-client

from fleet.hostids import split_host
from support import EXAMPLES, free_port, free_port_range, http_get, start_fleet, wait_until
from test_bokeh_parity import TOKEN, session_id_of
from up_helpers import run_cli

BOKEH_APP = str(EXAMPLES / "bokeh_random")


def test_bad_host_options_are_refused_before_anything_starts() -> None:
    refused = run_cli("balance", "--resolve", "fleet.test")
    assert refused.returncode == 2 and "NAME:PORT" in refused.stderr
    refused = run_cli("balance", "--resolve", "fleet.test:80", "--resolver", "dns.example")
    assert refused.returncode == 2 and "IP address" in refused.stderr
    refused = run_cli("balance", "--resolve", "fleet.test:80", "--dns-min-ttl", "60", "--dns-max-ttl", "5")
    assert refused.returncode == 2 and "min" in refused.stderr
    refused = run_cli("balance")
    assert refused.returncode == 2 and "--resolve" in refused.stderr
    refused = run_cli("up", "app.py", "--host-id", "pod.example")
    assert refused.returncode != 0 and "'.'" in refused.stderr + refused.stdout


@pytest.mark.slow(seconds=40)
def test_each_page_views_session_stays_on_its_host_without_cookies(tmp_path: Path) -> None:
    front_port = free_port()
    origin = f"127.0.0.1:{front_port}"
    hosts = []
    try:
        for name in ("h1", "h2"):
            port = free_port()
            proc = start_fleet("up", BOKEH_APP, "-n", "2", "--host-id", name, "--port", str(port),
                               "--base-port", str(free_port_range(2)), "--surge-base-port",
                               str(free_port_range(2)), "--control-socket", str(tmp_path / f"{name}.sock"),
                               "--allow-websocket-origin", origin, cwd=str(tmp_path))
            hosts.append((proc, port))
        for proc, _ in hosts:
            proc.wait_for_output(r"ready: open http://", timeout=90)
        front = start_fleet("balance", "--hosts", *(f"127.0.0.1:{port}" for _, port in hosts),
                            "--port", str(front_port))
        hosts.append((front, front_port))
        front.wait_for_output(r"host h1 .* is up", timeout=20)
        front.wait_for_output(r"host h2 .* is up", timeout=20)
        url = f"http://{origin}/bokeh_random"
        made = Counter()
        for _ in range(8):  # a cross-site embed: no cookie is ever sent back
            status, headers, page = http_get(url)
            assert status == 200
            host, _ = split_host(session_id_of(page))
            assert headers["Set-Cookie"].startswith(f"fleet_affinity={host}~")  # the host's, untouched
            made[host] += 1
            token = TOKEN.search(page.decode()).group(1)  # type: ignore[union-attr]
            ws = websocket.create_connection(f"ws://{origin}/bokeh_random/ws", timeout=10,
                                             subprotocols=["bokeh", token], origin=f"http://{origin}")
            ws.recv()  # Bokeh's ACK: the session is open on the host that made it
            ws.close()
        assert set(made) == {"h1", "h2"}, made
        for index, name in enumerate(("h1", "h2")):  # one session per page view on each host
            wait_until(lambda: hosts[index][0].output().count("session created on") == made[name], 10,
                       message=f"{name}: {made[name]} sessions")
        ready = json.loads(http_get(f"http://127.0.0.1:{hosts[0][1]}/_fleet/health/ready")[2])
        assert ready["host_id"] == "h1"
    finally:
        for proc, _ in reversed(hosts):
            proc.stop()
