"""A Bokeh page over HTTP/2 in headless Chromium: the page and its scripts come over h2, its
WebSocket too (RFC 8441, which Chromium uses when the server sends
SETTINGS_ENABLE_CONNECT_PROTOCOL: the handshake is answered 200 on a stream, not 101), and the
WebSocket works (a button press comes back as points)."""

from __future__ import annotations

import json
from pathlib import Path

from selenium.webdriver import Chrome

from bokeh_page import BokehPage, start_chromium
from conftest import BOKEH_APP, WORKERS
from support import require_tool
from test_edge_tls import make_cert
from up_helpers import up

NAVIGATION_PROTOCOLS = """
return [performance.getEntriesByType('navigation')[0].nextHopProtocol,
        ...performance.getEntriesByType('resource').map((r) => r.nextHopProtocol)];
"""


def websocket_handshakes(driver: Chrome) -> list[int]:
    """The status of each WebSocket handshake Chromium logged (DevTools network events)."""
    statuses = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.webSocketHandshakeResponseReceived":
            statuses.append(int(message["params"]["response"]["status"]))
    return statuses


def test_bokeh_page_and_its_websocket_go_over_http2(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "localhost")
    fleet = up(tmp_path, BOKEH_APP, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
               workers=WORKERS, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"ready: open https://localhost:{fleet.port}/bokeh_random", timeout=60)
        driver = start_chromium(require_tool("chromium"), require_tool("chromedriver"), tmp_path / "profile",
                                extra_flags=("--ignore-certificate-errors",), network_log=True)
        try:
            page = BokehPage(driver, f"https://localhost:{fleet.port}/bokeh_random")
            page.open()
            protocols = driver.execute_script(NAVIGATION_PROTOCOLS)
            assert protocols and set(protocols) == {"h2"}, protocols
            page.press_add()
            page.press_add()
            # Over HTTP/2 the WebSocket's handshake is answered 200 on a stream of the page's
            # connection; over HTTP/1.1 it would be a 101 on a connection of its own.
            assert websocket_handshakes(driver) == [200]
        finally:
            driver.quit()
