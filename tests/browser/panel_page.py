"""A page object for ``tests/apps/panel_slider.py`` in headless Chromium.

Read through BokehJS (Panel's widgets are Bokeh models): the page counts as rendered when its
document is idle and shows the server's ``value N``; moving the slider sets the Bokeh model's
``value`` in the page, which travels over the WebSocket to the worker, whose callback writes
``value N`` back into the Markdown pane: one round trip through the session.
"""

from __future__ import annotations

import re

from selenium import webdriver

from support import wait_until

_MODELS = """
if (!window.Bokeh || Bokeh.documents.length === 0 || !Bokeh.documents[0].is_idle) return null;
const models = [...Bokeh.documents[0].all_models];
const slider = models.find((m) => m.title === 'n' && 'value' in m && 'start' in m);
const texts = models.filter((m) => typeof m.text === 'string').map((m) => m.text);
"""

_STATE = _MODELS + """
if (!slider) return null;
return {value: slider.value, texts: texts, documents: Bokeh.documents.length};
"""

_MOVE = _MODELS + "slider.value = arguments[0]; return true;"


class PanelPage:
    """The panel_slider app in one browser, at ``url``."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def state(self) -> dict | None:
        return self.driver.execute_script(_STATE)

    def shown(self) -> str | None:
        """The ``value N`` the server wrote, or None before the page rendered."""
        state = self.state()
        if not state:
            return None
        return next((match.group(0) for text in state["texts"]
                     if (match := re.search(r"value \d+", text))), None)

    def open(self, timeout: float = 45.0) -> None:
        """Load (or reload) the page and wait until the server's text is on it."""
        self.driver.get(self.url)
        self.wait_rendered(timeout)

    def wait_rendered(self, timeout: float = 45.0) -> None:
        wait_until(lambda: self.shown() is not None, timeout, message=f"the Panel app rendered at {self.url}")

    def move(self, value: int, timeout: float = 15.0) -> None:
        """Set the slider and wait for the worker's answer (``value N``) in the page."""
        assert self.driver.execute_script(_MOVE, value)
        wait_until(lambda: self.shown() == f"value {value}", timeout,
                   message=f"the worker's 'value {value}' in the page")

    def served_by(self) -> str:
        state = self.state()
        assert state, "the page has not rendered"
        for text in state["texts"]:
            if (match := re.search(r"served by worker (g\d+w\d+)", text)):
                return match.group(1)
        raise AssertionError(f"no 'served by worker' text in {state['texts']}")
