"""Bokeh apps that only work when nothing runs them before a session, in headless Chromium.

A worker builds its Bokeh apps the way ``bokeh serve`` does and runs an app's code only for a
session: module-level ``curdoc().session_context`` works (the request-arguments pattern, Bokeh's
own auth example), a module-level side effect happens once per session (never at start or
reload), and one broken app among three answers as ``bokeh serve`` answers it while the others
serve.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from support import free_port, port_open, wait_until
from up_helpers import Fleet, up

APPS = Path(__file__).resolve().parent.parent / "apps"
WORKERS = 3

# What a Bokeh page holds once BokehJS has embedded its document (or null before that).
_DOCUMENT = """
if (!window.Bokeh || Bokeh.documents.length === 0 || !Bokeh.documents[0].is_idle) return null;
const doc = Bokeh.documents[0];
const shown = doc.get_model_by_name('shown');
return {documents: Bokeh.documents.length, roots: doc.roots().length, title: document.title,
        text: shown ? shown.text : null, body: document.body.innerText.trim()};
"""


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    """``fleet up ARGS -n 3`` on free ports with the proxy, ready; stopped after the test."""
    with ExitStack() as running:

        def start(*args: str) -> Fleet:
            fleet = up(tmp_path, *args, workers=WORKERS, proxy=True)
            running.enter_context(fleet.proc)
            fleet.proc.wait_for_output(r"ready: open http://localhost:\d+/", timeout=90)
            return fleet

        yield start


def document_of(driver: Chrome, url: str, timeout: float = 30.0) -> dict[str, Any]:
    driver.get(url)
    return wait_until(lambda: driver.execute_script(_DOCUMENT), timeout, message=f"a Bokeh document at {url}")


def test_module_level_request_arguments_show_n_7(fleet_of: Callable[..., Fleet],
                                                  browsers: Callable[[], Chrome]) -> None:
    fleet = fleet_of(str(APPS / "request_args.py"))
    driver = browsers()
    assert document_of(driver, f"http://localhost:{fleet.port}/request_args?N=7")["text"] == "N=7"
    assert document_of(driver, f"http://localhost:{fleet.port}/request_args?N=12")["text"] == "N=12"
    assert "Error running application handler" not in fleet.proc.output()


def _write_apps(directory: Path, broken: str) -> list[str]:
    directory.mkdir()
    for name in ("sliders", "dash"):
        (directory / f"{name}.py").write_text(
            "from bokeh.io import curdoc\nfrom bokeh.models import Div\n"
            f"curdoc().add_root(Div(text='{name} works', name='shown'))\n")
    body = {"runtime": "undefined_name_in_ohlc\n", "syntax": "ohlc_points = (\n"}[broken]
    (directory / "ohlc.py").write_text("from bokeh.io import curdoc\nfrom bokeh.models import Div\n"
                                       f"{body}curdoc().add_root(Div(text='ohlc works'))\n")
    return [str(directory / f"{name}.py") for name in ("sliders", "ohlc", "dash")]


def _bokeh_serve(apps: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as output:
        proc = subprocess.Popen([sys.executable, "-m", "bokeh", "serve", *apps, "--port", str(port),
                                 "--address", "127.0.0.1", "--allow-websocket-origin", f"localhost:{port}"],
                                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, port


@pytest.mark.parametrize("broken", ["runtime", "syntax"])
def test_three_apps_one_broken_the_others_serve_and_it_answers_as_bokeh_serve(
        fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome], tmp_path: Path, broken: str) -> None:
    apps = _write_apps(tmp_path / "apps", broken)
    fleet = fleet_of(*apps)
    driver = browsers()
    base = f"http://localhost:{fleet.port}"
    for name in ("sliders", "dash"):
        assert document_of(driver, f"{base}/{name}")["text"] == f"{name} works"
    shown = document_of(driver, f"{base}/ohlc")
    error = {"runtime": "NameError: name 'undefined_name_in_ohlc' is not defined",
             "syntax": "SyntaxError: '(' was never closed"}[broken]
    fleet.proc.wait_for_output(r"Error running application handler[^\n]*\n(?:.*\n)*?.*" + re.escape(error), timeout=10)
    if broken == "syntax":  # known before any session: named at start and by fleet status
        assert "Bokeh app /ohlc is broken (Invalid syntax in 'ohlc.py' on line 3" in fleet.proc.output()
        assert "broken app /ohlc: Invalid syntax in 'ohlc.py' on line 3" in fleet.cli("status").stdout
    assert fleet.all_ready(WORKERS)

    # bokeh serve itself, the same apps: what its browser shows for /ohlc, and its log.
    log = tmp_path / "bokeh-serve.log"
    proc, port = _bokeh_serve(apps, log)
    try:
        if broken == "syntax":  # bokeh serve refuses to start at all; fleet serves the other two
            assert proc.wait(timeout=60) == 1
            assert "Error loading" in log.read_text() and "Invalid syntax in 'ohlc.py' on line 3" in log.read_text()
            reference = {"documents": 1, "roots": 0, "title": "Bokeh Application", "text": None, "body": ""}
        else:
            wait_until(lambda: port_open(port), 60, message="bokeh serve listening")
            reference = document_of(driver, f"http://localhost:{port}/ohlc")
            wait_until(lambda: error in log.read_text(), 10, message="bokeh serve logged the error")
            assert "Error running application handler" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert shown == reference, (shown, reference)
    assert reference["roots"] == 0  # Bokeh's answer: an empty document, the error in the log


def test_module_side_effect_runs_once_per_session_never_at_start_or_reload(
        fleet_of: Callable[..., Fleet], browsers: Callable[[], Chrome], tmp_path: Path) -> None:
    app = tmp_path / "side_effect.py"
    shutil.copy(APPS / "side_effect.py", app)
    runs = tmp_path / "runs.txt"  # where the app appends a line each time it runs
    fleet = fleet_of(str(app))
    assert not runs.exists()  # three workers started: the app ran 0 times
    driver = browsers()
    sessions = []
    for _ in range(4):
        text = document_of(driver, f"http://localhost:{fleet.port}/side_effect")["text"]
        sessions.append(text.removeprefix("session "))
    lines = runs.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(sessions), lines  # once per session
    assert len(set(sessions)) == 4

    result = fleet.cli("reload")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: {w["generation"] for w in fleet.status()["workers"] if w["state"] == "ready"} == {2},
               60, message="generation 2 serving")
    assert runs.read_text().splitlines() == lines  # three new workers: 0 runs
    # A new browser: the first one's affinity cookie pins it to its draining worker, which may
    # end between serving a page and that page's WebSocket (a proxy matter, not the app's).
    text = document_of(browsers(), f"http://localhost:{fleet.port}/side_effect")["text"]
    after = runs.read_text().splitlines()
    assert after[:-1] == lines and after[-1].split()[0] == text.removeprefix("session "), (after, text)
    assert after[-1].split()[1].startswith("g2w")


def test_bokehs_auth_example_login_bad_login_logout(fleet_of: Callable[..., Fleet],
                                                     browsers: Callable[[], Chrome]) -> None:
    example = APPS / "server_auth"
    # As its README says: bokeh serve --enable-xsrf-cookies --auth-module=auth.py app.py
    fleet = fleet_of("--enable-xsrf-cookies", "--auth-module", str(example / "auth.py"), str(example / "app.py"))
    driver = browsers()
    # login.html shows Bokeh's logo from static.bokeh.org: keep the browser on loopback.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*", "http://static.bokeh.org/*"]})
    base = f"http://localhost:{fleet.port}"

    def login(username: str, password: str) -> None:
        wait_until(lambda: driver.find_elements(By.NAME, "username"), 30, message="the login form")
        driver.find_element(By.NAME, "username").send_keys(username)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button.form-button").click()

    driver.get(f"{base}/app")  # no user cookie: the auth module sends the browser to /login
    wait_until(lambda: "/login" in driver.current_url, 30, message="redirected to /login")
    login("bokeh", "wrong")
    wait_until(lambda: "Login incorrect" in driver.find_element(By.CLASS_NAME, "errormessage").text, 30,
               message="the bad login refused")
    assert driver.get_cookie("user") is None
    login("bokeh", "bokeh")
    sliders = """
    if (!window.Bokeh || Bokeh.documents.length === 0 || !Bokeh.documents[0].is_idle) return null;
    return document.title;"""
    assert wait_until(lambda: driver.execute_script(sliders), 30, message="the app after login") == "Sliders"
    assert driver.current_url == f"{base}/app"
    # The logout button's CustomJS was built from curdoc().session_context.logout_url at module level.
    button = wait_until(lambda: driver.execute_script(_LOGOUT_BUTTON), 30, message="the logout button")
    button.click()
    wait_until(lambda: "/login" in driver.current_url, 30, message="logged out, back at /login")
    assert driver.get_cookie("user") is None
    driver.get(f"{base}/app")
    wait_until(lambda: "/login" in driver.current_url, 30, message="the app needs a login again")
    assert "Error running application handler" not in fleet.proc.output()


# The logout Button's <button> element, inside BokehJS's shadow DOM (found through the view tree).
_LOGOUT_BUTTON = """
if (!window.Bokeh || Bokeh.documents.length === 0) return null;
const stack = [...Bokeh.index];
while (stack.length) {
  const view = stack.pop();
  if (view.model.label === 'logout' && view.button_el) return view.button_el;
  stack.push(...view.children());
}
return null;
"""
