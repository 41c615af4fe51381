"""A Panel app (``tests/apps/panel_slider.py``, a slider the worker answers) under ``fleet up -n 3``
in headless Chromium: one Panel session per page view, from fresh browsers and from a cross-site
embed with third-party cookies blocked, and none made by a ``fleet reload`` with pages open.

Sessions are counted from the app's own ``session created on <worker> <session id>`` line,
printed once per run of the script, which Panel makes once per session. A view counts one
session when its id was made once, on the worker its id names. On a loaded machine Bokeh may
discard a page's session before its WebSocket arrives (no connection for
``--unused-session-lifetime``, 15 s) and make it again under the same id when it does: that
worker runs the app twice for one view, as ``bokeh serve`` would; such re-runs are reported, and
an id made on two workers (a page and its WebSocket split) fails the test.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import start_chromium
from panel_page import PanelPage
from support import require_tool
from test_bokeh_embed import EmbeddingSite, embedding_site  # noqa: F401 - the fixture
from test_bokeh_random import sessions_per_worker
from up_helpers import Fleet, up

pytest.importorskip("panel")  # the optional extra; `pip install -e '.[test]'` brings it

APP = str(Path(__file__).resolve().parent.parent / "apps" / "panel_slider.py")
WORKERS = 3
FRESH_BROWSERS = 12
EMBED_VIEWS = 6


@pytest.fixture
def panel_fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """``fleet up tests/apps/panel_slider.py -n 3 [OPTIONS]`` behind the proxy, ready to browse."""
    with ExitStack() as running:

        def start(*options: str) -> Fleet:
            fleet = up(tmp_path, APP, *options, workers=WORKERS, proxy=True)
            running.enter_context(fleet.proc)
            fleet.proc.wait_for_output(rf"ready: open http://localhost:{fleet.port}/panel_slider", timeout=120)
            return fleet

        yield start


def app_url(fleet: Fleet) -> str:
    return f"http://localhost:{fleet.port}/panel_slider"


SESSION_LINE = re.compile(r"^(g\d+w\d+):\d+ \| session created on (g\d+w\d+) (\S+)$", re.MULTILINE)


def panel_sessions(fleet: Fleet) -> tuple[Counter[str], int]:
    """Sessions per worker, each id counted once, and how many times an app ran again for an
    id it had made before (a discarded session made again). Fails on an id made on a worker
    other than the one it names, or made on two workers."""
    sessions_per_worker(fleet)  # the barrier: every session line printed so far has arrived
    made: dict[str, str] = {}
    reruns = 0
    for prefix, worker, session_id in SESSION_LINE.findall(fleet.proc.output()):
        assert prefix == worker and session_id.startswith(worker + "-"), (prefix, worker, session_id)
        if session_id in made:
            assert made[session_id] == worker, f"session {session_id} made on {made[session_id]} and {worker}"
            reruns += 1
        made[session_id] = worker
    return Counter(made.values()), reruns


@pytest.mark.timeout(900)  # twelve Chromium starts and Panel pages on a loaded 2-core machine
def test_each_fresh_browser_makes_one_panel_session(
        panel_fleet: Callable[..., Fleet], tmp_path: Path, report: Callable[[str], None]) -> None:
    chromium, chromedriver = require_tool("chromium"), require_tool("chromedriver")
    fleet = panel_fleet()
    served = []
    for view in range(FRESH_BROWSERS):
        # A fresh profile each time: no cookie, a new visitor; one Chromium alive at a time.
        driver = start_chromium(chromium, chromedriver, tmp_path / f"profile-{view}")
        try:
            page = PanelPage(driver, app_url(fleet))
            page.open()
            page.move(view + 1)
            served.append(page.served_by())
        finally:
            driver.quit()
    sessions, reruns = panel_sessions(fleet)
    total = sum(sessions.values())
    report(f"Panel, {FRESH_BROWSERS} fresh browsers -> {total} sessions "
           f"({total / FRESH_BROWSERS:.2f} per view; {dict(sorted(sessions.items()))}; "
           f"{reruns} discarded and made again)")
    assert total == FRESH_BROWSERS, (sessions, served)
    assert sorted(sessions.elements()) == sorted(served)
    assert len(sessions) > 1, f"every view went to one worker: {sessions}"


@pytest.mark.timeout(600)
def test_cross_site_panel_embed_makes_one_session_per_view_without_cookies(
        panel_fleet: Callable[..., Fleet], browsers: Callable[..., Chrome],
        embedding_site: EmbeddingSite, report: Callable[[str], None]) -> None:  # noqa: F811
    fleet = panel_fleet("--allow-websocket-origin", f"127.0.0.1:{embedding_site.port}")
    embedding_site.embed(app_url(fleet))
    driver = browsers(block_third_party_cookies=True)
    page = PanelPage(driver, embedding_site.url)
    for view in range(EMBED_VIEWS):
        page.open()
        page.move(view + 1)
    sessions, reruns = panel_sessions(fleet)
    total = sum(sessions.values())
    report(f"Panel cross-site embed, third-party cookies blocked: {EMBED_VIEWS} views -> {total} "
           f"sessions ({total / EMBED_VIEWS:.2f} per view; {dict(sorted(sessions.items()))}; "
           f"{reruns} discarded and made again)")
    stored = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    assert not [c for c in stored if c["name"] == "fleet_affinity"], stored
    assert total == EMBED_VIEWS


@pytest.mark.timeout(600)
def test_fleet_reload_with_three_panel_pages_open_makes_no_session(
        panel_fleet: Callable[..., Fleet], browsers: Callable[..., Chrome],
        report: Callable[[str], None]) -> None:
    fleet = panel_fleet()
    pages = [PanelPage(browsers(), app_url(fleet)) for _ in range(3)]
    for number, page in enumerate(pages, 1):
        page.open()
        page.move(number)
    served = [page.served_by() for page in pages]
    before, _ = panel_sessions(fleet)
    assert sum(before.values()) == 3

    result = fleet.cli("reload", timeout=400)  # three Panel workers start: slow on a loaded machine
    assert result.returncode == 0, result.stderr
    assert "generation 2 ready" in result.stdout
    for number, page in enumerate(pages, 11):
        page.move(number)  # each page's own session answers, on its old worker, still draining
    assert [page.served_by() for page in pages] == served
    after, _ = panel_sessions(fleet)
    report(f"Panel: fleet reload with 3 pages open: {sum(after.values()) - 3} new sessions")
    assert after == before, (before, after)

    newcomer = PanelPage(browsers(), app_url(fleet))
    newcomer.open()
    assert newcomer.served_by().startswith("g2w")
    newcomer.move(5)
