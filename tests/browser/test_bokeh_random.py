"""The bokeh_random example end to end in headless Chromium, through fleet's proxy.

A page renders its plot and its button streams points into it, in several browsers at once;
each page view creates exactly one Bokeh session with ``--sticky`` (the default); and when the
worker behind a page is killed, a reload is served by another worker at once while the killed
one restarts.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections import Counter
from typing import Callable

from selenium.webdriver import Chrome

from bokeh_page import POINTS_PER_CLICK, BokehPage
from support import http_get, wait_until
from up_helpers import Fleet

PAGE_VIEWS = 6
SESSION_LINE = re.compile(r"^(g\d+w\d+):\d+ \| session created on (g\d+w\d+)", re.MULTILINE)


def app_url(fleet: Fleet) -> str:
    return f"http://localhost:{fleet.port}/bokeh_random"


def sessions_per_worker(fleet: Fleet) -> Counter[str]:
    """Bokeh sessions created so far, per worker, from the app's ``session created on wN`` lines.

    A worker's stdout and stderr share one pipe that fleet relays line by line in order. So a
    request for a missing page sent straight to each worker (tornado logs the 404 as a warning)
    is a barrier: once its log line shows up, every session line that worker printed before it
    has shown up too. Call it after the pages rendered: a page renders only once its session
    exists, so no session line is still on its way.
    """
    marker = f"/fleet-test-barrier-{uuid.uuid4().hex}"
    for worker in fleet.status()["workers"]:
        assert http_get(f"http://127.0.0.1:{worker['port']}{marker}")[0] == 404
        fleet.proc.wait_for_output(rf"(?m)^{worker['id']}:\d+ \| 404 GET {marker}", timeout=10)
    sessions: Counter[str] = Counter()
    for prefix, worker_id in SESSION_LINE.findall(fleet.proc.output()):
        assert prefix == worker_id
        sessions[worker_id] += 1
    return sessions


def view_pages(fleet: Fleet, driver: Chrome, count: int) -> Counter[str]:
    """``count`` page views, each without cookies (a new visitor); the worker behind each one."""
    page = BokehPage(driver, app_url(fleet))
    served: Counter[str] = Counter()
    for _ in range(count):
        driver.delete_all_cookies()
        page.open()
        served[page.served_by()] += 1
    return served


def test_three_browsers_at_once_each_plot_their_own_points(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[[], Chrome]) -> None:
    fleet = bokeh_fleet()
    pages = [BokehPage(browsers(), app_url(fleet)) for _ in range(3)]
    for page in pages:
        page.open()
        assert page.points() == 0
    # Each open page keeps a WebSocket on its worker, so least connections sends the next new
    # visitor to a worker without one, and the affinity cookie keeps its WebSocket there too.
    served = [page.served_by() for page in pages]
    assert sorted(served) == ["g1w0", "g1w1", "g1w2"]
    assert [page.affinity() for page in pages] == served

    clicks = [1, 2, 3]
    for round_ in range(max(clicks)):
        for page, wanted in zip(pages, clicks):
            if round_ < wanted:
                page.press_add()
    assert [page.points() for page in pages] == [n * POINTS_PER_CLICK for n in clicks]

    for number, page in enumerate(pages, 1):
        page.screenshot(f"browser{number}-{page.served_by()}")
    assert sessions_per_worker(fleet) == Counter(served)


def test_each_page_view_creates_one_session_with_sticky(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[[], Chrome],
        report: Callable[[str], None]) -> None:
    fleet = bokeh_fleet()
    served = view_pages(fleet, browsers(), PAGE_VIEWS)
    sessions = sessions_per_worker(fleet)
    report(f"--sticky (default): {PAGE_VIEWS} page views -> {sum(sessions.values())} Bokeh sessions "
           f"({dict(sorted(sessions.items()))})")
    assert sessions == served, (sessions, served)
    assert sum(sessions.values()) == PAGE_VIEWS
    assert len(served) > 1, f"every page view went to one worker: {served}"


def test_page_views_without_sticky_create_extra_sessions(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[[], Chrome],
        report: Callable[[str], None]) -> None:
    # Without affinity a page's WebSocket may land on another worker than its HTML did; that
    # worker creates a second session for the page. Measured, not asserted beyond the minimum.
    fleet = bokeh_fleet("--no-sticky")
    view_pages(fleet, browsers(), PAGE_VIEWS)
    sessions = sessions_per_worker(fleet)
    total = sum(sessions.values())
    report(f"--no-sticky: {PAGE_VIEWS} page views -> {total} Bokeh sessions ({dict(sorted(sessions.items()))})")
    print(f"--no-sticky: {PAGE_VIEWS} page views -> {total} Bokeh sessions")
    assert total >= PAGE_VIEWS


def test_killed_worker_page_reloads_from_another_worker_at_once(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[[], Chrome]) -> None:
    fleet = bokeh_fleet()
    page = BokehPage(browsers(), app_url(fleet))
    page.open()
    page.press_add()
    page.screenshot("failover-before-kill")
    victim = page.affinity()
    assert victim is not None and victim == page.served_by()
    before = fleet.worker(victim)

    os.kill(before["pid"], signal.SIGKILL)
    wait_until(lambda: any("Lost websocket" in line for line in page.read_console()), 10,
               message="the page's WebSocket to close")

    page.open()
    rescuer = page.served_by()
    assert rescuer != victim, f"the reload came from {victim} itself, already back? {fleet.worker(victim)}"
    assert page.affinity() == rescuer
    assert page.points() == 0
    assert page.press_add() == POINTS_PER_CLICK
    page.screenshot("failover-after-reload")

    def victim_back() -> bool:
        worker = fleet.worker(victim)
        return worker["state"] == "ready" and worker["restarts"] == 1 and worker["pid"] != before["pid"]

    wait_until(victim_back, 30, message=f"{victim} restarted and ready")
    assert page.press_add() == 2 * POINTS_PER_CLICK  # the rescuing worker keeps serving the page
    assert all(worker["restarts"] == 0 for worker in fleet.status()["workers"] if worker["id"] != victim)



def test_fleet_reload_keeps_every_open_page_on_its_session_and_new_pages_go_to_the_new_generation(
        bokeh_fleet: Callable[..., Fleet], browsers: Callable[[], Chrome],
        report: Callable[[str], None]) -> None:
    fleet = bokeh_fleet()
    pages = [BokehPage(browsers(), app_url(fleet)) for _ in range(3)]
    for page in pages:
        page.open()
        page.press_add()
    served = [page.served_by() for page in pages]
    assert sorted(served) == ["g1w0", "g1w1", "g1w2"]
    sessions_before = sessions_per_worker(fleet)
    assert sum(sessions_before.values()) == 3

    result = fleet.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "generation 2 ready" in result.stdout
    # Every page's next click reaches its own session: the points it had plus five more, drawn
    # by the worker of generation 1 that still serves it while it drains.
    for page in pages:
        assert page.press_add() == 2 * POINTS_PER_CLICK
    assert [page.served_by() for page in pages] == served
    assert not any("Lost websocket" in line for page in pages for line in page.read_console())
    assert {w["id"]: w["state"] for w in fleet.status()["workers"] if w["generation"] == 1} == {
        worker: "draining" for worker in served}
    sessions_after = sessions_per_worker(fleet)
    report(f"fleet reload with 3 pages open: {sum(sessions_after.values()) - 3} new Bokeh sessions")
    assert sessions_after == sessions_before, (sessions_before, sessions_after)

    # A new visitor lands on the new generation.
    newcomer = BokehPage(browsers(), app_url(fleet))
    newcomer.open()
    assert newcomer.served_by().startswith("g2w")
    assert newcomer.press_add() == POINTS_PER_CLICK
