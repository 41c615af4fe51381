"""A Bokeh page over HTTP/2 in headless Chromium: the page, its scripts and its WebSocket
(RFC 8441, which Chromium uses when the server sends SETTINGS_ENABLE_CONNECT_PROTOCOL) share
one TLS connection to fleet, and the WebSocket works (a button press comes back as points)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import psutil
from selenium.webdriver import Chrome

from bokeh_page import BokehPage, start_chromium
from conftest import BOKEH_APP, WORKERS
from support import require_tool, wait_until
from test_edge_tls import make_cert
from up_helpers import up

NAVIGATION_PROTOCOLS = """
return [performance.getEntriesByType('navigation')[0].nextHopProtocol,
        ...performance.getEntriesByType('resource').map((r) => r.nextHopProtocol)];
"""


def established_clients(pid: int, port: int) -> int:
    """Client connections the fleet's proxy holds on ``port`` now."""
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def test_bokeh_page_and_its_websocket_share_one_http2_connection(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "localhost")
    fleet = up(tmp_path, BOKEH_APP, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
               workers=WORKERS, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"ready: open https://localhost:{fleet.port}/bokeh_random", timeout=60)
        driver = start_chromium(require_tool("chromium"), require_tool("chromedriver"), tmp_path / "profile",
                                extra_flags=("--ignore-certificate-errors",))
        try:
            page = BokehPage(driver, f"https://localhost:{fleet.port}/bokeh_random")
            page.open()
            protocols = driver.execute_script(NAVIGATION_PROTOCOLS)
            assert protocols and set(protocols) == {"h2"}, protocols
            page.press_add()
            page.press_add()
            # The page, its scripts and the WebSocket: one connection (a WebSocket over
            # HTTP/1.1 would hold a second one).
            wait_until(lambda: established_clients(fleet.proc.pid, fleet.port) == 1, 10,
                       message="one client connection")
        finally:
            driver.quit()
