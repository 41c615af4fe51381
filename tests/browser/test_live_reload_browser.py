"""Live configuration reload under load, end to end: ``wrk`` keep-alive requests, 30 Bokeh
sessions' WebSockets exchanging a message every 100 ms and 3 Bokeh pages open in Chromium, while
``fleet.toml`` changes (a WebSocket origin added, --max-connections changed, --max-memory set,
2 -> 3 workers) and ``fleet reload`` applies it: nothing fails, no WebSocket closes, no Bokeh
session is made again, and each change is in effect. Then an invalid ``fleet.toml`` is refused
with its message and nothing changes. With one proxy process and with two."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import websocket
from selenium.webdriver import Chrome

from bokeh_page import BokehPage
from conftest import BOKEH_APP
from liveload import BokehServerInfo, LiveLoad, bokeh_sessions
from support import free_port, free_port_range, start_fleet, wait_until
from up_helpers import Fleet

NEW_ORIGIN = "http://new.example.com"
PAGES = 3
WEBSOCKETS = 30


def start(tmp_path: Path, toml: str, *options: str) -> Fleet:
    """fleet up examples/bokeh_random with its ports on the command line, the rest in fleet.toml."""
    (tmp_path / "fleet.toml").write_text(toml)
    base, surge, port = free_port_range(3), free_port_range(3), free_port()
    control = str(tmp_path / "fleet.sock")
    proc = start_fleet("up", BOKEH_APP, "--base-port", str(base), "--surge-base-port", str(surge),
                       "--port", str(port), "--control-socket", control, "--config", "fleet.toml", *options,
                       cwd=str(tmp_path))
    fleet = Fleet(proc, base, port, control, surge)
    proc.wait_for_output(rf"ready: open http://localhost:{port}/bokeh_random", timeout=90)
    return fleet


def opens(port: int, origin: str) -> bool:
    """Whether a new Bokeh session's WebSocket from ``origin`` is accepted (101 and Bokeh's ACK)."""
    try:
        BokehServerInfo("/bokeh_random", origin=origin).open(port).close()
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 403, exc
        return False
    return True


@pytest.mark.parametrize("proxy_processes", [1, 2])
def test_fleet_reload_under_load_applies_every_change_and_drops_nothing(
        tmp_path: Path, browsers: Callable[[], Chrome], report: Callable[[str], None], proxy_processes: int) -> None:
    fleet = start(tmp_path, "workers = 2\nmax_connections = 1000\n", "--proxy-processes", str(proxy_processes))
    with fleet.proc:
        port = fleet.port
        pages = [BokehPage(browsers(), f"http://localhost:{port}/bokeh_random") for _ in range(PAGES)]
        for page in pages:
            page.open()
        assert not opens(port, NEW_ORIGIN)
        # "/" is Bokeh's index (a redirect to the app): answered by a worker, no session made.
        load = LiveLoad(port, path="/", websockets=WEBSOCKETS, exchange=BokehServerInfo("/bokeh_random"),
                        pages=pages, host="localhost")
        with load:
            before = bokeh_sessions(fleet)
            # One per page, per WebSocket client and for the refused origin's page. (Once in a
            # loop there was one more, made before the reload; the reload must add none.)
            assert sum(before.values()) >= PAGES + WEBSOCKETS + 1, before
            workers = {(w["id"], w["pid"]) for w in fleet.status()["workers"]}
            (tmp_path / "fleet.toml").write_text(
                "workers = 3\nmax_connections = 500\nmax_memory = '3GiB'\n"
                f"allow_websocket_origin = ['new.example.com', 'localhost:{port}']\n")
            reloaded = fleet.cli("reload")
            assert reloaded.returncode == 0, reloaded.stderr
            for expected in ("--workers: 2 -> 3: scaling", "--max-connections: 1000 -> 500: in place",
                             "--max-memory: none -> 3221225472: in place",
                             "--allow-websocket-origin: [] -> [new.example.com, localhost:", "scaled to 3 workers"):
                assert expected in reloaded.stdout, reloaded.stdout
            if proxy_processes > 1:
                assert f"applied in {proxy_processes} proxy processes" in reloaded.stdout, reloaded.stdout
            status = fleet.status()
            assert status["desired"] == 3
            assert sum(1 for w in status["workers"] if w["current"] and w["state"] == "ready") == 3
            assert status["config"]["last_reload"]["result"] == "applied"
            # An invalid file under the same load: refused with fleet up's message, nothing changes.
            for text, message in (("workers = 4\nbogus = 1\n", "fleet.toml: unknown setting 'bogus'"),
                                  ("workers = 4\nmax_connections = 'many'\n", "--max-connections (from fleet.toml)")):
                (tmp_path / "fleet.toml").write_text(text)
                refused = fleet.cli("reload")
                assert refused.returncode == 1 and message in refused.stderr, refused.stderr
                assert "nothing changed" in refused.stderr
            unchanged = fleet.status()
            assert unchanged["desired"] == 3 and unchanged["generation"] == status["generation"]
            assert {(w["id"], w["pid"]) for w in unchanged["workers"]} == {(w["id"], w["pid"]) for w in status["workers"]}
            assert unchanged["config"]["last_reload"]["result"] == "refused"
            result = load.stop()
        assert result.failures() == [], result.summary()
        after = bokeh_sessions(fleet)
        report(f"fleet reload under load ({proxy_processes} proxy processes): {result.summary()}; "
               f"{sum(after.values()) - sum(before.values())} new Bokeh sessions "
               f"({sum(before.values())} before the reload)")
        assert after == before, (before, after)
        # The old generation still serves what it had (draining); the new origin opens a session.
        assert {(w["id"], w["pid"]) for w in fleet.status()["workers"] if w["generation"] == 1} <= workers
        assert opens(port, NEW_ORIGIN)
        assert json.loads(fleet.cli("status", "--json").stdout)["workers"]
        for page in pages:  # their WebSockets closed now: fleet's stop need not wait for them
            page.driver.get("about:blank")
