"""fleet with every Bokeh minor version pyproject allows (3.3 ... 3.9), end to end.

fleet replaces Bokeh's session-id generation where ``bokeh.server.views.session_handler``
imported it (private API, ``fleet.worker.bokeh``), so each supported minor version runs a real
fleet here: ``fleet up examples/bokeh_random --session-ids signed`` with that Bokeh first
on ``PYTHONPATH`` (master and workers), a page through the proxy whose signed session id carries
the worker's id (the hook ran), and the page's WebSocket opening that session (the signature of
the patched id passes Bokeh's check).

Cost: each version other than the installed one is ``pip install --no-deps --target`` into a
cache (``$FLEET_TEST_CACHE`` or ``~/.cache/fleet-tests``: about 10 s and 30 MB per version, and
once pandas 2 for the versions before 3.9, 15 s and 50 MB; nothing after that); each fleet then
takes a few seconds. Everything else (tornado, numpy, jinja2, ...) is the venv's. An install
that fails (no network, no cache) is a skip locally and a failure in CI.

Bokeh 3.10 is not in the list: it requires Python 3.12 (its code uses ``type`` statements), and
it creates session ids in ``bokeh.server.core`` instead, so the hook would need a new place to
patch. pyproject keeps ``<3.10`` until that is done and tested on 3.12.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import websocket

from fleet.worker.bokeh import SUPPORTED_BOKEH
from support import EXAMPLES, IN_CI, http_get
from test_bokeh_parity import TOKEN, session_id_of, start

pytest.importorskip("bokeh")
pytestmark = pytest.mark.timeout(300)

# The newest release of each supported minor version.
VERSIONS = ("3.3.4", "3.4.3", "3.5.2", "3.6.3", "3.7.3", "3.8.2", "3.9.2")
BOKEH_APP = str(EXAMPLES / "bokeh_random")


def cache_root() -> Path:
    return Path(os.environ.get("FLEET_TEST_CACHE") or Path.home() / ".cache" / "fleet-tests") / "bokeh-versions"


def installed(name: str, *requirements: str) -> Path:
    """A directory holding ``requirements`` (``pip install --no-deps --target``, once, into
    the cache under ``name``): the venv provides everything else."""
    target = cache_root() / name
    if (target / ".complete").exists():
        return target
    partial = target.with_name(f"{name}.partial-{os.getpid()}")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--disable-pip-version-check", "--target", str(partial), *requirements],
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        message = f"cannot install {' '.join(requirements)} into {partial}: {result.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    (partial / ".complete").touch()
    try:
        partial.rename(target)  # atomic: a concurrent run finds a complete directory or none
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)  # another run got there first
    return target


def python_path(version: str) -> list[Path]:
    """What goes first on PYTHONPATH for ``bokeh`` ``version``: nothing when the venv has it;
    before 3.9 also pandas, which ``ColumnDataSource`` imported (3.9 does without)."""
    import bokeh

    if bokeh.__version__ == version:
        return []
    paths = [installed(f"bokeh-{version}", f"bokeh=={version}")]
    if tuple(int(part) for part in version.split(".")[:2]) < (3, 9):
        try:
            import pandas  # noqa: F401
        except ImportError:
            paths.append(installed("pandas-2", "pandas>=2.2,<3", "pytz"))
    return paths


def test_every_supported_minor_version_is_tested() -> None:
    (low_major, low_minor), (high_major, high_minor) = SUPPORTED_BOKEH
    assert low_major == high_major == 3
    tested = [tuple(int(part) for part in version.split(".")[:2]) for version in VERSIONS]
    assert tested == [(3, minor) for minor in range(low_minor, high_minor)]
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"bokeh>={low_major}.{low_minor},<{high_major}.{high_minor}"' in pyproject


def static_dir(paths: list[str]) -> Path:
    if paths:
        return Path(paths[0]) / "bokeh" / "server" / "static"
    from bokeh.util.paths import static_path

    return Path(static_path())


@pytest.mark.parametrize("version", VERSIONS)
def test_worker_made_signed_session_ids_and_a_websocket_session(version: str, tmp_path: Path) -> None:
    paths = [str(path) for path in python_path(version)]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH", "")]))}
    fleet = start(tmp_path, BOKEH_APP, "--session-ids", "signed", workers=1, env=env)
    with fleet.proc:
        host = f"localhost:{fleet.port}"
        status, _, page = http_get(f"http://127.0.0.1:{fleet.port}/bokeh_random", headers={"Host": host})
        assert status == 200, page[:500]
        # The worker runs that Bokeh: it serves that version's BokehJS.
        worker_port = fleet.status()["workers"][0]["port"]
        bundle = http_get(f"http://127.0.0.1:{worker_port}/static/js/bokeh.min.js")[2]
        assert bundle == (static_dir(paths) / "js" / "bokeh.min.js").read_bytes()
        session_id = session_id_of(page)
        workers = {worker["id"] for worker in fleet.status()["workers"]}
        maker, separator, _ = session_id.partition("-")
        assert separator and maker in workers, session_id  # the hook ran: the id names its worker
        assert "." in session_id  # ... and was signed after it was prefixed
        assert "session ids stay Bokeh's own" not in fleet.proc.output()

        token = TOKEN.search(page.decode()).group(1)  # type: ignore[union-attr]
        ws = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/bokeh_random/ws", timeout=20,
                                         subprotocols=["bokeh", token], origin=f"http://{host}", host=host)
        try:
            assert ws.getsubprotocol() == "bokeh"
            assert json.loads(ws.recv())["msgtype"] == "ACK"
        finally:
            ws.close()
        # The app's own line for the session, from the worker that made the id.
        fleet.proc.wait_for_output(rf"(?m)^{maker}:\d+ \| session created on {maker}", timeout=10)
