"""Fixtures for the browser suite: headless Chromium drivers and ``fleet up examples/bokeh_random``.

Chromium and chromedriver come from Debian's packages (``.ci/run`` installs them): a missing one
skips the suite locally and fails it in CI. Every driver is quit and every fleet stopped, even
when a test fails. Session counts the tests measure are printed in pytest's terminal summary.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest
from selenium.webdriver import Chrome

from bokeh_page import start_chromium
from support import EXAMPLES, require_tool
from up_helpers import Fleet, up

BOKEH_APP = str(EXAMPLES / "bokeh_random")
WORKERS = 3


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.slow)  # every browser test drives Chromium for half a minute or more


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[], Chrome]]:
    """Start headless Chromiums, each with a fresh profile (its own cookie jar); all quit after."""
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    drivers: list[Chrome] = []

    def start(block_third_party_cookies: bool = False) -> Chrome:
        driver = start_chromium(chromium, chromedriver, tmp_path / f"chromium-profile-{len(drivers)}",
                                block_third_party_cookies)
        drivers.append(driver)
        return driver

    try:
        yield start
    finally:
        for driver in drivers:
            driver.quit()


@pytest.fixture
def bokeh_fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """Start ``fleet up examples/bokeh_random -n 3 [OPTIONS]`` on free ports, ready to browse."""
    with ExitStack() as running:

        def start(*options: str) -> Fleet:
            fleet = up(tmp_path, BOKEH_APP, *options, workers=WORKERS, proxy=True)
            running.enter_context(fleet.proc)
            fleet.proc.wait_for_output(rf"ready: open http://localhost:{fleet.port}/bokeh_random", timeout=60)
            return fleet

        yield start


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Add a line to the "measured in the browser" section of pytest's terminal summary (carried
    in the test's report, so it reaches the summary from an xdist worker: tests/conftest.py)."""
    return lambda line: request.node.user_properties.append(("measured", line))
