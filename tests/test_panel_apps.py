"""Panel apps: which files are Panel apps, what ``panel serve`` options fleet hands its workers,
and fleet serving a Panel script, notebook and a module's ``APPS`` dict on real workers."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fleet.appspec import AppKind, Flavour, detect, detect_apps, panel_flavour
from fleet.balancer.bokeh_session import session_id_from_token
from fleet.bokeh_settings import run_secrets, worker_settings
from fleet.bokeh_values import parse_num_threads
from fleet.config import BokehSettings
from fleet.worker.panel_server import panel_argv
from support import http_get
from up_helpers import up

APPS = Path(__file__).resolve().parent / "apps"


def test_a_servable_script_a_panel_notebook_and_a_dict_module_are_panel_apps(tmp_path: Path) -> None:
    script = detect(str(APPS / "panel_slider.py"))
    assert (script.kind, script.flavour, script.url_path) == (AppKind.BOKEH, Flavour.PANEL, "/panel_slider")
    notebook = detect(str(APPS / "panel_notes.ipynb"))
    assert (notebook.kind, notebook.flavour) == (AppKind.BOKEH, Flavour.PANEL)
    module = detect(str(APPS / "panel_dash.py"))
    assert (module.kind, module.flavour, module.url_path) == (AppKind.BOKEH, Flavour.PANEL_APPS, "/")
    (tmp_path / "main.py").write_text("import panel as pn\npn.panel('x').servable()\n")
    assert detect(str(tmp_path)).flavour is Flavour.PANEL
    assert detect(str(APPS / "notes.ipynb")).flavour is Flavour.BOKEH  # a Bokeh notebook stays Bokeh's
    assert len(detect_apps([str(APPS / "panel_slider.py"), str(APPS / "panel_dash.py")])) == 2


@pytest.mark.parametrize(("source", "flavour"), [
    ("import panel as pn\npn.Row().servable()\n", Flavour.PANEL),
    ("from panel import Row\nRow().servable()\n", Flavour.PANEL),
    ("import panel as pn\nfrom bokeh.io import curdoc\ncurdoc().add_root(pn.Row().get_root())\n", Flavour.PANEL),
    ("import panel as pn\nAPPS = {'a': lambda: pn.Row()}\n", Flavour.PANEL_APPS),
    ("import panel as pn\nAPPS: dict = {'a': lambda: pn.Row()}\n", Flavour.PANEL_APPS),
    ("import panel as pn\nAPPS == 1\npn.Row().servable()\n", Flavour.PANEL),
    ("import panel as pn\nimport tornado.web\napp = tornado.web.Application([])\n", None),  # Tornado's
    ("from bokeh.io import curdoc\ncurdoc()\n", None),
    ("import panelling\n", None),
])
def test_panel_flavour_is_read_from_the_source_alone(source: str, flavour: Flavour | None) -> None:
    assert panel_flavour(source) is flavour


def test_panel_options_become_panel_serve_arguments_and_basic_auth_never_argv() -> None:
    settings = json.loads(worker_settings(BokehSettings(
        basic_auth="S3cret", oauth_provider="github", admin=True, warm=True, reuse_sessions=True,
        global_loading_spinner=True, setup="/srv/setup.py", num_threads=4, liveness=True)))
    assert "basic_auth" not in settings and "S3cret" not in json.dumps(settings)
    # --warm and --liveness fleet does itself, on the worker's own applications.
    assert panel_argv(settings) == ["--admin", "--reuse-sessions", "--global-loading-spinner",
                                    "--oauth-provider", "github", "--setup", "/srv/setup.py",
                                    "--num-threads", "4"]
    assert panel_argv({}) == []


def test_panel_logins_get_one_cookie_secret_for_every_worker() -> None:
    env, warnings = run_secrets(BokehSettings(basic_auth="S3cret"), {}, make_secret=lambda: "made")
    assert dict(env) == {"PANEL_BASIC_AUTH": "S3cret", "BOKEH_COOKIE_SECRET": "made"}
    assert warnings and warnings[0].startswith("--basic-auth and no cookie secret")
    env, warnings = run_secrets(BokehSettings(oauth_provider="github"), {"PANEL_COOKIE_SECRET": "mine"},
                                make_secret=lambda: "made")
    assert (env, warnings) == ((), [])
    env, _ = run_secrets(BokehSettings(), {"PANEL_OAUTH_PROVIDER": "github"}, make_secret=lambda: "made")
    assert dict(env) == {"BOKEH_COOKIE_SECRET": "made"}
    assert run_secrets(BokehSettings(), {}, make_secret=lambda: "made") == ((), [])


@pytest.mark.parametrize("text", ["-1", "257", "two", ""])
def test_num_threads_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--num-threads"):
        parse_num_threads(text)
    assert parse_num_threads("0") == 0 and parse_num_threads(8) == 8


def _session_id(page: bytes) -> str:
    token = re.search(rb'"token":\s*"([^"]+)"', page)
    assert token, page[:400]
    session_id = session_id_from_token(token.group(1))
    assert session_id is not None
    return session_id


@pytest.mark.slow
def test_a_dict_module_and_a_panel_notebook_serve_with_worker_id_session_ids(tmp_path: Path) -> None:
    pytest.importorskip("panel")
    fleet = up(tmp_path, str(APPS / "panel_dash.py"), str(APPS / "panel_notes.ipynb"), workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"fleet \| ready", timeout=120)
        # Panel sends a document's content over the WebSocket, so the page itself shows the
        # session (its token) and the title; the app's own line shows that its function ran.
        for worker in fleet.status()["workers"]:
            base = f"http://127.0.0.1:{worker['port']}"
            for path, title in (("/hello", b"Panel Application"), ("/notes", b"Panel Application"),
                                ("/panel_notes", b"panel notes")):
                status, _, body = http_get(base + path, timeout=30)
                assert status == 200 and b"<title>" + title + b"</title>" in body, (path, body[:300])
                assert _session_id(body).startswith(worker["id"] + "-")
            fleet.proc.wait_for_output(rf"{worker['id']}:\d+ \| hello session on {worker['id']}", timeout=10)
            status, _, index = http_get(base + "/", timeout=30)
            assert status == 200 and b"./hello" in index and b"./notes" in index
        assert "Error running application handler" not in fleet.proc.output()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _login(port: int, password: str) -> tuple[int, str, str]:
    """POST Panel's login form to one worker: (status, Location, Set-Cookie)."""
    data = urllib.parse.urlencode({"username": "ada", "password": password}).encode()
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        response = opener.open(f"http://127.0.0.1:{port}/login", data=data, timeout=30)
    except urllib.error.HTTPError as exc:
        response = exc
    return response.status, response.headers.get("Location", ""), "; ".join(response.headers.get_all("Set-Cookie") or [])


def _get(url: str, cookie: str | None = None) -> tuple[int, str, bytes]:
    """GET without following a redirect: (status, Location, body)."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        response = urllib.request.build_opener(_NoRedirect).open(request, timeout=30)
    except urllib.error.HTTPError as exc:
        response = exc
    return response.status, response.headers.get("Location", ""), response.read()


@pytest.mark.slow
def test_basic_auth_login_on_one_worker_counts_on_the_others_and_stays_out_of_argv(tmp_path: Path) -> None:
    pytest.importorskip("panel")
    password = "Mixed Case S3cret"  # Panel lowercases $PANEL_BASIC_AUTH; fleet must not
    fleet = up(tmp_path, str(APPS / "panel_slider.py"), "--basic-auth", password, workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(r"fleet \| ready", timeout=120)
        first, second = fleet.status()["workers"]
        status, location, _ = _login(first["port"], password.lower())
        assert status == 302 and "error=" in location
        status, location, cookies = _login(first["port"], password)
        assert status == 302 and "error=" not in location, location
        user = re.search(r"(user=[^;]+)", cookies)
        assert user, cookies
        page = f"http://127.0.0.1:{second['port']}/panel_slider"
        status, location, _ = _get(page)
        assert status == 302 and "/login" in location
        status, _, body = _get(page, user.group(1))
        assert status == 200 and b"<title>panel slider</title>" in body
        for worker in (first, second):
            with open(f"/proc/{worker['pid']}/cmdline", "rb") as cmdline:
                assert password.encode() not in cmdline.read()
