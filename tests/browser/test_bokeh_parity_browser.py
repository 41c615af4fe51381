"""bokeh serve's deployment options through fleet, in headless Chromium.

--prefix /dash; signed session ids across three workers with affinity off; two apps in one
fleet; an auth module whose login page sets a user cookie that the app reads from its session
context.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import POINTS_PER_CLICK, BokehPage
from support import EXAMPLES, wait_until
from test_bokeh_random import sessions_per_worker, view_pages
from up_helpers import Fleet, up

APPS = Path(__file__).resolve().parent.parent / "apps"
BOKEH_APP = str(EXAMPLES / "bokeh_random")


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """``fleet up ARGS -n N`` on free ports with the proxy, ready; stopped after the test."""
    with ExitStack() as running:

        def start(*args: str, workers: int = 2) -> Fleet:
            fleet = up(tmp_path, *args, workers=workers, proxy=True)
            running.enter_context(fleet.proc)
            fleet.proc.wait_for_output(r"ready: open http://localhost:\d+/", timeout=90)
            return fleet

        yield start


def test_prefix_dash_page_renders_and_its_button_works(
        fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome]) -> None:
    fleet = fleet_of(BOKEH_APP, "--prefix", "/dash")
    page = BokehPage(browsers(), f"http://localhost:{fleet.port}/dash/bokeh_random")
    page.open()
    assert page.press_add() == POINTS_PER_CLICK
    assert page.press_add() == 2 * POINTS_PER_CLICK
    # BokehJS itself came from under the prefix
    scripts = page.driver.execute_script(
        "return [...document.scripts].map((s) => s.src).filter((s) => s.includes('/static/'))")
    assert scripts and all(f"localhost:{fleet.port}/dash/static/" in src for src in scripts), scripts


def test_signed_sessions_across_three_workers_without_affinity(
        fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome],
        report: Callable[[str], None]) -> None:
    fleet = fleet_of(BOKEH_APP, "--no-sticky", "--session-ids", "signed", workers=3)
    driver = browsers()
    served = view_pages(fleet, driver, 6)  # each view's WebSocket may go to any worker
    page = BokehPage(driver, f"http://localhost:{fleet.port}/bokeh_random")
    assert page.press_add() == POINTS_PER_CLICK
    sessions = sessions_per_worker(fleet)
    report(f"--no-sticky --session-ids signed, 3 workers: 6 page views (pages from "
           f"{dict(sorted(served.items()))}) -> {sum(sessions.values())} sessions")
    # Every page rendered, so every WebSocket's signed id passed its worker's check; more
    # sessions than pages means some WebSocket reached another worker than the one that made
    # and signed its id (that worker then made the session): the cross-worker check happened.
    assert sum(sessions.values()) > 6, f"no WebSocket left its page's worker: {sessions}"


def test_two_apps_in_one_fleet(fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome],
                               tmp_path: Path) -> None:
    second = tmp_path / "second"
    shutil.copytree(BOKEH_APP, second, ignore=shutil.ignore_patterns("__pycache__"))
    fleet = fleet_of(BOKEH_APP, str(second))
    driver = browsers()
    first_page = BokehPage(driver, f"http://localhost:{fleet.port}/bokeh_random")
    second_page = BokehPage(driver, f"http://localhost:{fleet.port}/second")
    first_page.open()
    assert first_page.press_add() == POINTS_PER_CLICK
    second_page.open()
    assert driver.title == "bokeh_random"  # the copy keeps its title; its URL is its own
    assert second_page.points() == 0
    assert second_page.press_add() == POINTS_PER_CLICK
    assert second_page.press_add() == 2 * POINTS_PER_CLICK


def test_auth_module_login_cookie_reaches_the_apps_session_context(
        fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome]) -> None:
    fleet = fleet_of(str(APPS / "gallery"), "--auth-module", str(APPS / "auth_cookie.py"))
    fleet.proc.wait_for_output(r"--auth-module and no cookie secret: fleet made one", timeout=5)
    driver = browsers()
    driver.get(f"http://localhost:{fleet.port}/gallery")  # no cookie: login page, then back
    about = "return window.Bokeh && Bokeh.documents.length ? " \
            "Bokeh.documents[0].get_model_by_name('about').text : null"
    text = wait_until(lambda: driver.execute_script(about), 30, message="the gallery rendered")
    assert "user=alice" in text, text
    assert driver.current_url.endswith("/gallery")
    driver.delete_all_cookies()
    driver.get(f"http://localhost:{fleet.port}/login?name=bob&next=/gallery")
    text = wait_until(lambda: "user=bob" in (driver.execute_script(about) or "") and driver.execute_script(about),
                      30, message="the gallery rendered for bob")
    assert "user=bob" in text
