"""A page on another site embeds the app with ``server_document()``, third-party cookies blocked.

The embedding page comes from ``127.0.0.1:<port>`` (a small HTTP server in the test), the app
from fleet at ``localhost:<port>``: two sites, so the browser neither stores nor sends fleet's
affinity cookie for the app (and BokehJS's autoload request sends no credentials anyway). The
page's autoload request and its WebSocket still meet on one worker because the proxy follows
the Bokeh session id: one session per page view.
"""

from __future__ import annotations

import http.server
import threading
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import BokehPage, POINTS_PER_CLICK
from support import free_port
from test_bokeh_random import sessions_per_worker
from up_helpers import Fleet

PAGE_VIEWS = 6


class EmbeddingSite:
    """One HTML page, on 127.0.0.1:<free port>, that embeds an app with ``server_document()``."""

    def __init__(self) -> None:
        self.page = b""
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.page)))
                self.end_headers()
                self.wfile.write(site.page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def embed(self, app_url: str) -> None:
        from bokeh.embed import server_document

        self.page = (f"<!doctype html><html><head><title>embedding site</title></head><body>"
                     f"<h1>another site</h1>{server_document(app_url)}</body></html>").encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def embedding_site() -> Iterator[EmbeddingSite]:
    site = EmbeddingSite()
    try:
        yield site
    finally:
        site.close()


def test_cross_site_embed_makes_one_session_per_page_view_without_cookies(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[..., Chrome],
        embedding_site: EmbeddingSite, report: Callable[[str], None]) -> None:
    fleet = bokeh_fleet("--allow-websocket-origin", f"127.0.0.1:{embedding_site.port}")
    embedding_site.embed(f"http://localhost:{fleet.port}/bokeh_random")
    driver = browsers(block_third_party_cookies=True)
    page = BokehPage(driver, embedding_site.url)
    for _ in range(PAGE_VIEWS):
        page.open()
    assert page.press_add() == POINTS_PER_CLICK
    sessions = sessions_per_worker(fleet)
    total = sum(sessions.values())
    report(f"cross-site embed, third-party cookies blocked: {PAGE_VIEWS} page views -> {total} sessions "
           f"({total / PAGE_VIEWS:.2f} per view; {dict(sorted(sessions.items()))})")
    stored = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    assert not [c for c in stored if c["name"] == "fleet_affinity"], stored  # really no cookie
    assert total == PAGE_VIEWS
