"""The cross-site ``server_document()`` embed through the generated HAProxy and nginx configs.

As in ``test_bokeh_embed``, the embedding page comes from ``127.0.0.1:<port>`` and the app from
``localhost:<port>``, with third-party cookies blocked: the affinity cookie never arrives (and
BokehJS's autoload request sends no credentials anyway). Here the app is served by ``fleet up
--no-proxy examples/bokeh_random -n 3`` behind real HAProxy or nginx running ``fleet config``'s
output, which send the page's WebSocket to the worker named in its session token: one Bokeh
session per page view, as behind fleet's own proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import POINTS_PER_CLICK, BokehPage
from support import EXAMPLES
from test_bokeh_embed import PAGE_VIEWS, EmbeddingSite, embedding_site  # noqa: F401 - a fixture
from test_bokeh_random import sessions_per_worker
from test_configgen_servers import fleet_config, running
from up_helpers import Fleet, up

BOKEH_APP = str(EXAMPLES / "bokeh_random")
WORKERS = 3


@pytest.fixture
def embedded_workers(tmp_path: Path, embedding_site: EmbeddingSite) -> Iterator[Fleet]:  # noqa: F811
    """``fleet up --no-proxy`` whose --port is the proxy's, allowing the embedding site's origin."""
    (tmp_path / "fleet").mkdir()
    fleet = up(tmp_path / "fleet", BOKEH_APP, "--allow-websocket-origin", f"127.0.0.1:{embedding_site.port}",
               workers=WORKERS)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=90)
        yield fleet


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_cross_site_embed_behind_the_generated_config_makes_one_session_per_view(
        kind: str, embedded_workers: Fleet, embedding_site: EmbeddingSite,  # noqa: F811
        browsers: Callable[..., Chrome], tmp_path: Path, report: Callable[[str], None]) -> None:
    check_embed(kind, embedded_workers, embedding_site, browsers, tmp_path, report)


def check_embed(kind: str, workers: Fleet, embedding_site: EmbeddingSite,  # noqa: F811
                browsers: Callable[..., Chrome], tmp_path: Path, report: Callable[[str], None]) -> None:
    """PAGE_VIEWS views of the embedding page behind ``kind``: one Bokeh session each."""
    from bokeh.util.paths import static_path

    embedding_site.embed(f"http://localhost:{workers.port}/bokeh_random")
    config = fleet_config(workers, workers.port, app=BOKEH_APP, workers=str(WORKERS))
    with running(kind, tmp_path, config, bokeh_static_dir=str(static_path())):
        driver = browsers(block_third_party_cookies=True)
        page = BokehPage(driver, embedding_site.url)
        for _ in range(PAGE_VIEWS):
            page.open()
        assert page.press_add() == POINTS_PER_CLICK  # the last view's WebSocket works
        stored = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
        # Leave the page before the proxy stops: BokehJS would reconnect and make a session.
        driver.get("about:blank")
    sessions = sessions_per_worker(workers)
    total = sum(sessions.values())
    report(f"{kind} (generated), cross-site embed, third-party cookies blocked: {PAGE_VIEWS} page views "
           f"-> {total} sessions ({total / PAGE_VIEWS:.2f} per view; {dict(sorted(sessions.items()))})")
    assert not [c for c in stored if c["name"] == "fleet_affinity"], stored  # really no cookie
    assert total == PAGE_VIEWS
    assert len(sessions) > 1, f"every page view went to one worker: {sessions}"
