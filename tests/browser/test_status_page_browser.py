"""fleet's status page (``/_fleet/``) in headless Chromium: it shows the workers, follows
traffic and a worker's restart without a reload, runs under its Content-Security-Policy
without a violation, and fits a 375 px wide phone without sideways scrolling."""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import ARTIFACTS
from support import EXAMPLES, http_get, wait_until
from up_helpers import Fleet, up

APP = str(EXAMPLES / "tornado_hello.py")
WORKERS = 2

_ROWS = """
return [...document.querySelectorAll('#workers tbody tr')].map((row) => {
  const cells = {};
  for (const cell of row.cells) cells[cell.dataset.field] = cell.textContent;
  return cells;
});
"""
# Elements whose right edge is past the viewport's (what would make a phone scroll sideways).
_OVERFLOW = """
const width = document.documentElement.clientWidth;
const wide = [...document.body.querySelectorAll('*')]
  .filter((node) => node.getClientRects().length && node.getBoundingClientRect().right > width + 0.5)
  .map((node) => node.tagName + '.' + node.className + ' ' + Math.round(node.getBoundingClientRect().right));
return {scroll: document.documentElement.scrollWidth, width: width, wide: wide};
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with ExitStack() as running:
        started = up(tmp_path, APP, workers=WORKERS, proxy=True)
        running.enter_context(started.proc)
        started.proc.wait_for_output(rf"status page: http://localhost:{started.port}/_fleet/", timeout=60)
        yield started


class StatusPage:
    def __init__(self, driver: Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self) -> None:
        self.driver.get(self.url)
        wait_until(lambda: self.updates() >= 1, timeout=20, message="the page's first update")

    def updates(self) -> int:
        return int(self.driver.execute_script("return document.body.dataset.updates || '0'"))

    def rows(self) -> list[dict[str, str]]:
        return self.driver.execute_script(_ROWS)  # type: ignore[no-any-return]

    def row(self, worker: str) -> dict[str, str]:
        return next(row for row in self.rows() if row["id"] == worker)

    def chart_max(self, series: str) -> float:
        value = self.driver.execute_script(f"return document.querySelector('.chart[data-series={series}]').dataset.max")
        return float(value or 0)

    def exits(self) -> list[str]:
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll('#exits li')].map((li) => li.textContent)")

    def problems(self) -> list[str]:
        """Console errors and warnings: a CSP violation, a failed fetch, a script error."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def test_status_page_shows_workers_and_follows_traffic_and_a_restart(
        fleet: Fleet, browsers: Callable[..., Chrome], report: Callable[[str], None]) -> None:
    page = StatusPage(browsers(), f"http://localhost:{fleet.port}/_fleet/")
    page.open()
    wait_until(lambda: [(r["id"], r["state"]) for r in page.rows()] == [("g1w0", "ready"), ("g1w1", "ready")],
               timeout=20, message="both workers ready on the page")

    for _ in range(40):
        assert http_get(f"http://127.0.0.1:{fleet.port}/")[0] == 200
    wait_until(lambda: page.chart_max("requests_per_second") > 0, timeout=20,
               message="the requests/s chart shows the traffic")

    victim = page.row("g1w1")
    updates = page.updates()
    os.kill(int(victim["pid"]), signal.SIGKILL)

    def restarted() -> bool:
        row = page.row("g1w1")
        return row["restarts"] == "1" and row["state"] == "ready" and row["pid"] != victim["pid"]

    wait_until(restarted, timeout=30, message="the restart on the page, without reloading it")
    assert page.updates() > updates
    exits = page.exits()
    assert len(exits) == 1 and f"g1w1 (pid {victim['pid']}" in exits[0] and "SIGKILL" in exits[0], exits
    assert page.problems() == []
    report(f"status page: {page.updates()} live updates; screenshot {page.screenshot('status-page')}")


def test_status_page_fits_a_375px_phone(fleet: Fleet, browsers: Callable[..., Chrome],
                                       report: Callable[[str], None]) -> None:
    driver = browsers()
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    page = StatusPage(driver, f"http://localhost:{fleet.port}/_fleet/")
    page.open()
    wait_until(lambda: len(page.rows()) == WORKERS, timeout=20, message="the workers on the page")
    layout: dict[str, Any] = driver.execute_script(_OVERFLOW)
    assert layout["width"] == 375 and layout["scroll"] <= layout["width"] and layout["wide"] == [], layout
    # The worker table became cards: each value has its label beside it, the header row is hidden.
    assert driver.execute_script("return getComputedStyle(document.querySelector('#workers thead')).display") == "none"
    assert page.problems() == []
    report(f"status page at 375 px: no overflow; screenshot {page.screenshot('status-page-375')}")
