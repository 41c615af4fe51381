"""The bokeh_random app in headless Chromium through real nginx running ``fleet config nginx``.

``fleet up --no-proxy examples/bokeh_random -n 3`` with nginx in front, configured by the
generated file (Bokeh's /static/ from disk): each page view creates exactly one Bokeh session,
since the affinity cookie sends the page's WebSocket to the worker that rendered the page, and
the cookie names that worker's slot. The same nginx without the cookie (``--no-sticky``) is
measured first for contrast: there a page's WebSocket may land on another worker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import POINTS_PER_CLICK, BokehPage
from support import EXAMPLES
from test_bokeh_random import PAGE_VIEWS, app_url, sessions_per_worker, view_pages
from test_configgen_servers import fleet_config, running
from up_helpers import Fleet, up

BOKEH_APP = str(EXAMPLES / "bokeh_random")
WORKERS = 3


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Fleet]:
    """``fleet up --no-proxy`` whose --port is nginx's, so the workers allow its origin."""
    (tmp_path / "fleet").mkdir()
    fleet = up(tmp_path / "fleet", BOKEH_APP, workers=WORKERS)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=90)
        yield fleet


def test_each_page_view_through_the_generated_nginx_creates_one_session(
        workers: Fleet, browsers: Callable[[], Chrome], tmp_path: Path,
        report: Callable[[str], None]) -> None:
    from bokeh.util.paths import static_path

    static = {"bokeh_static_dir": str(static_path())}
    for name in ("no-sticky", "sticky"):
        (tmp_path / name).mkdir()
    without = fleet_config(workers, workers.port, app=BOKEH_APP, workers=str(WORKERS), sticky=False)
    with running("nginx", tmp_path / "no-sticky", without, **static):
        first = browsers()
        view_pages(workers, first, PAGE_VIEWS)
        # Leave the page now: BokehJS would reconnect its lost WebSocket through the next nginx
        # (no cookie, so to any worker) and make a session there that no page view made.
        first.get("about:blank")
    before = sessions_per_worker(workers)
    report(f"nginx --no-sticky: {PAGE_VIEWS} page views -> {sum(before.values())} Bokeh sessions")
    assert sum(before.values()) >= PAGE_VIEWS

    config = fleet_config(workers, workers.port, app=BOKEH_APP, workers=str(WORKERS))
    with running("nginx", tmp_path / "sticky", config, **static):
        driver = browsers()
        served = view_pages(workers, driver, PAGE_VIEWS)
        created = sessions_per_worker(workers) - before
        page = BokehPage(driver, app_url(workers))
        # The last page still works over its WebSocket, and its cookie names its worker's slot.
        assert page.press_add() == POINTS_PER_CLICK
        match = re.fullmatch(r"g\d+(w\d+)", page.served_by())
        assert match and page.affinity() == match.group(1), (page.served_by(), page.affinity())
    total = sum(created.values())
    report(f"generated nginx (sticky): {PAGE_VIEWS} page views -> {total} Bokeh sessions "
           f"({total / PAGE_VIEWS:.2f} per view; {dict(sorted(created.items()))})")
    assert created == served, (created, served)  # each page's one session, on its own worker
    assert total == PAGE_VIEWS
    assert len(served) > 1, f"every page view went to one worker: {served}"
