"""`bokeh serve`'s deployment options through `fleet up`, end to end, over HTTP.

Real fleets on free ports: signed session ids that every worker accepts (affinity off), secrets
that reach workers only through their environment, several apps (a script, a directory app with
static/, templates/, theme.yaml and app_hooks.py, a notebook) under one --prefix, --args.
Browser checks of the same live in tests/browser/test_bokeh_parity_browser.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import psutil

from support import EXAMPLES, free_port, free_port_range, http_get, start_fleet, wait_until
from up_helpers import Fleet

APPS = Path(__file__).resolve().parent / "apps"
BOKEH_APP = str(EXAMPLES / "bokeh_random")
TOKEN = re.compile(r'"token":"([A-Za-z0-9_\-.]+)"')


def start(tmp_path: Path, *args: str, workers: int, app_args: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> Fleet:
    """``fleet up ARGS -n N ... [--args APP_ARGS]`` (``--args`` must come last)."""
    base, port = free_port_range(workers), free_port()
    control = str(tmp_path / "fleet.sock")
    tail = ["--args", *app_args] if app_args else []
    proc = start_fleet("up", *args, "-n", str(workers), "--base-port", str(base), "--port", str(port),
                       "--control-socket", control, *tail, env=env, cwd=str(tmp_path))
    fleet = Fleet(proc, base, port, control)
    proc.wait_for_output(r"ready: open http://localhost:\d+/", timeout=90)
    return fleet


def session_id_of(page: bytes) -> str:
    """The session id inside the token Bokeh puts in the page (base64url JSON, then signature)."""
    match = TOKEN.search(page.decode())
    assert match, page[:500]
    payload = match.group(1).split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["session_id"]


def worker_processes(fleet: Fleet) -> list[psutil.Process]:
    return [psutil.Process(worker["pid"]) for worker in fleet.status()["workers"]]


def test_a_session_id_signed_by_one_worker_passes_every_others_check(tmp_path: Path) -> None:
    fleet = start(tmp_path, BOKEH_APP, "--no-sticky", "--session-ids", "signed", workers=3)
    with fleet.proc:
        fleet.proc.wait_for_output(r"fleet made one for this run", timeout=5)
        status, _, page = http_get(f"http://127.0.0.1:{fleet.port}/bokeh_random")
        assert status == 200
        session_id = session_id_of(page)
        maker, _, signature = session_id.partition(".")
        workers = fleet.status()["workers"]
        assert signature and maker.split("-", 1)[0] in {w["id"] for w in workers}
        tampered = session_id[:-2] + ("AA" if not session_id.endswith("AA") else "BB")
        for worker in workers:
            url = f"http://127.0.0.1:{worker['port']}/bokeh_random?bokeh-session-id="
            assert http_get(url + session_id)[0] == 200, worker["id"]
            assert http_get(url + tampered)[0] == 403, worker["id"]


def test_secrets_reach_workers_only_through_their_environment(tmp_path: Path) -> None:
    cookie_secret = "cookie-" + "q" * 40
    auth = tmp_path / "auth.py"
    auth.write_text("login_url = '/login'\n\ndef get_user(request_handler):\n    return 'someone'\n")
    fleet = start(tmp_path, BOKEH_APP, "--session-ids", "signed", "--auth-module", str(auth), workers=2,
                  env={"BOKEH_COOKIE_SECRET": cookie_secret})
    with fleet.proc:
        workers = worker_processes(fleet)
        keys = set()
        for process in workers:
            environ = process.environ()
            keys.add(environ["BOKEH_SECRET_KEY"])
            assert environ["BOKEH_COOKIE_SECRET"] == cookie_secret
            assert environ["BOKEH_SIGN_SESSIONS"] == "true"
            cmdline = " ".join(process.cmdline())
            assert cookie_secret not in cmdline and environ["BOKEH_SECRET_KEY"] not in cmdline
            assert "--auth-module" not in cmdline or str(auth) in cmdline
        assert len(keys) == 1  # one key per run, the same in every worker
        key = keys.pop()
        assert key not in " ".join(psutil.Process(fleet.proc.pid).cmdline())
        assert key not in fleet.proc.output()
        # the auth module's get_user lets the page through on every worker
        assert http_get(f"http://127.0.0.1:{fleet.port}/bokeh_random")[0] == 200


def test_several_apps_under_one_prefix_with_args(tmp_path: Path) -> None:
    gallery, notebook = str(APPS / "gallery"), str(APPS / "notes.ipynb")
    fleet = start(tmp_path, BOKEH_APP, gallery, notebook, "--prefix", "/dash", workers=2,
                  app_args=("--colour", "red"))
    with fleet.proc:
        base = f"http://127.0.0.1:{fleet.port}/dash"
        fleet.proc.wait_for_output(rf"also: http://localhost:{fleet.port}/dash/notes", timeout=5)
        for name in ("bokeh_random", "gallery", "notes"):
            status, _, page = http_get(f"{base}/{name}")
            assert status == 200, name
            assert session_id_of(page)
        assert b"fleet-gallery-template" in http_get(f"{base}/gallery")[2]
        assert http_get(f"{base}/gallery/static/hello.txt")[2] == b"hello from gallery static\n"
        assert http_get(f"http://127.0.0.1:{fleet.port}/bokeh_random")[0] == 404  # only under the prefix
        index = http_get(f"{base}/")[2]
        assert all(f"/dash/{name}".encode() in index for name in ("bokeh_random", "gallery", "notes"))
        for worker in fleet.status()["workers"]:
            fleet.proc.wait_for_output(rf"(?m)^{worker['id']}:\d+ \| gallery hooks loaded on {worker['id']}$",
                                       timeout=5)
        # --args reaches the apps: the gallery prints its sys.argv[1:] each time it runs
        fleet.proc.wait_for_output(r"gallery argv=\['--colour', 'red'\]", timeout=5)


def test_old_double_dash_form_and_bad_apps_are_explained(tmp_path: Path) -> None:
    from up_helpers import run_cli

    result = run_cli("up", BOKEH_APP, "not-an-app", "-n", "1", "--port", str(free_port()),
                     "--base-port", str(free_port()), "--control-socket", str(tmp_path / "s.sock"))
    assert result.returncode != 0
    assert "not-an-app" in result.stdout + result.stderr and "--args" in result.stdout + result.stderr
    result = run_cli("up", BOKEH_APP, "--num-procs", "4")
    assert result.returncode == 2 and "-n/--workers" in result.stderr
