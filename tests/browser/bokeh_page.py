"""Headless Chromium (Selenium) and a small page object for the bokeh_random example.

The page is read through BokehJS (``Bokeh.documents``, the view tree in ``Bokeh.index``)
rather than through pixels: the plot counts as rendered when its view has finished painting on
a canvas of non-zero size, and a button press counts when the points reach the page's
``ColumnDataSource`` and the scatter glyph that draws them.
"""

from __future__ import annotations

import re
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from support import wait_until

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Without the networking flags Chromium keeps trying to reach Google (component updates,
# sync, safe browsing) and, on a machine without outside network, hammers refused connections.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=900,520",  # a viewport about as tall as the app
)

POINTS_PER_CLICK = 5  # examples/bokeh_random/main.py streams five points per click

# Shared by the scripts below: the view of a named model, found by walking the view tree.
_VIEW_OF = """
function viewOf(name) {
  const model = Bokeh.documents[0].get_model_by_name(name);
  const stack = [...Bokeh.index];
  while (stack.length) {
    const view = stack.pop();
    if (view.model === model) return view;
    stack.push(...view.children());
  }
  return null;
}
"""

_RENDERED = _VIEW_OF + """
if (!window.Bokeh || Bokeh.documents.length === 0) return false;
const plot = viewOf('plot');
return Bokeh.documents[0].is_idle && plot !== null && plot.has_finished()
       && plot.canvas_view.bbox.width > 0 && plot.canvas_view.bbox.height > 0;
"""

_POINTS = _VIEW_OF + """
const source = Bokeh.documents[0].get_model_by_name('numbers');
const plot = viewOf('plot');
const glyphs = plot.model.renderers.map((r) => plot.renderer_views.get(r).glyph.data_size);
return {source: source.data.x.length, drawn: Math.min(...glyphs)};
"""

_BUTTON = _VIEW_OF + "return viewOf('add').button_el;"


def start_chromium(chromium: str, chromedriver: str, profile: Path,
                   block_third_party_cookies: bool = False, extra_flags: tuple[str, ...] = (),
                   network_log: bool = False) -> webdriver.Chrome:
    """A headless Chromium with its own fresh profile (so its own cookie jar)."""
    options = Options()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    if block_third_party_cookies:  # what many browsers do by default now
        options.add_experimental_option("prefs", {"profile.block_third_party_cookies": True,
                                                  "profile.cookie_controls_mode": 1})
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", **({"performance": "ALL"} if network_log else {})})
    return webdriver.Chrome(service=Service(chromedriver), options=options)


class BokehPage:
    """The bokeh_random app in one browser, at ``url`` (through fleet's proxy)."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url
        self.console: list[str] = []

    def open(self, timeout: float = 30.0) -> None:
        """Load (or reload) the page and wait until the plot is drawn."""
        self.driver.get(self.url)
        self.wait_rendered(timeout)

    def wait_rendered(self, timeout: float = 30.0) -> None:
        try:
            wait_until(lambda: self.driver.execute_script(_RENDERED), timeout,
                       message=f"the Bokeh plot rendered at {self.url}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- browser console ---\n" + "\n".join(self.read_console())) from None

    def points(self) -> int:
        """Points in the page's data source, checked against what the scatter glyph holds."""
        counts = self.driver.execute_script(_POINTS)
        assert counts["source"] == counts["drawn"], counts
        return int(counts["source"])

    def press_add(self, timeout: float = 10.0) -> int:
        """Click the button for real and wait for its points to come back over the WebSocket."""
        before = self.points()
        self.driver.execute_script(_BUTTON).click()
        expected = before + POINTS_PER_CLICK
        wait_until(lambda: self.points() == expected, timeout, message=f"{expected} points on the plot")
        return expected

    def served_by(self) -> str:
        """The worker id the page says it came from (the ``served_by`` Div)."""
        text = self.driver.execute_script(
            "return Bokeh.documents[0].get_model_by_name('served_by').text")
        match = re.match(r"served by worker (g\d+w\d+)", text)
        assert match, text
        return match.group(1)

    def affinity(self) -> str | None:
        cookie = self.driver.get_cookie("fleet_affinity")
        return cookie["value"] if cookie else None

    def read_console(self) -> list[str]:
        """Browser console messages so far (each read drains Chromium's buffer, so keep them)."""
        self.console.extend(entry["message"] for entry in self.driver.get_log("browser"))
        return self.console

    def screenshot(self, name: str) -> Path:
        """Save the viewport to ``artifacts/NAME.png`` (without the clicked button's focus ring)."""
        self.driver.execute_script("arguments[0].blur();", self.driver.execute_script(_BUTTON))
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
