"""fleet with every Bokeh minor version pyproject allows (3.3 ... 3.10), end to end.

fleet replaces Bokeh's session-id generation where Bokeh's session-making code imported it
(``bokeh.server.views.session_handler`` up to 3.9, ``bokeh.server.core`` from 3.10; private
API, ``fleet.worker.bokeh``), so each supported minor version runs a real
fleet here: ``fleet up examples/bokeh_random --session-ids signed`` with that Bokeh first
on ``PYTHONPATH`` (master and workers), a page through the proxy whose signed session id carries
the worker's id (the hook ran), and the page's WebSocket opening that session (the signature of
the patched id passes Bokeh's check).

Cost: each version other than the installed one is ``pip install --no-deps --target`` into a
cache (``$FLEET_TEST_CACHE`` or ``~/.cache/fleet-tests``: about 10 s and 30 MB per version, and
once pandas 2 for the versions before 3.9, 15 s and 50 MB; nothing after that); each fleet then
takes a few seconds. Everything else (tornado, numpy, jinja2, ...) is the venv's. An install
that fails (no network, no cache) is a skip locally and a failure in CI.

Bokeh 3.10 requires Python 3.12 (its code uses ``type`` statements). Run from an older Python,
its fleet runs under the newest pyenv Python 3.12+ (``~/.pyenv/versions``) in a venv in the
cache holding fleet's dependencies and that Bokeh (a minute once), with this checkout's ``src``
first on ``PYTHONPATH``; no such Python is a skip locally and a failure in CI.
"""

from __future__ import annotations

import json
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import websocket

from fleet.worker.bokeh import SUPPORTED_BOKEH
from support import EXAMPLES, IN_CI, http_get
from test_bokeh_parity import TOKEN, session_id_of, start

pytest.importorskip("bokeh")
pytestmark = pytest.mark.timeout(300)

# The newest release of each supported minor version.
VERSIONS = ("3.3.4", "3.4.3", "3.5.2", "3.6.3", "3.7.3", "3.8.2", "3.9.2", "3.10.2")
# Versions that need a newer Python than the oldest fleet supports.
NEEDS_PYTHON = {"3.10.2": (3, 12)}
BOKEH_APP = str(EXAMPLES / "bokeh_random")
ROOT = Path(__file__).resolve().parent.parent


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


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def newer_python(needed: tuple[int, int]) -> Path:
    """The newest pyenv Python at least ``needed``."""
    found = []
    for candidate in (Path.home() / ".pyenv" / "versions").glob("3.*"):
        parts = candidate.name.split(".")
        if len(parts) == 3 and all(part.isdigit() for part in parts) and (candidate / "bin" / "python").exists():
            found.append((tuple(int(part) for part in parts), candidate / "bin" / "python"))
    usable = sorted(item for item in found if item[0][:2] >= needed)
    if not usable:
        _unavailable(f"no Python {'.'.join(map(str, needed))}+ under ~/.pyenv/versions")
    return usable[-1][1]


def interpreter(version: str) -> tuple[str, list[str]]:
    """(python, PYTHONPATH entries) that run a fleet with bokeh ``version``: this one, or for
    a Bokeh that needs a newer Python, a cached venv of that Python with fleet's dependencies
    and that Bokeh, running this checkout's ``src``."""
    needed = NEEDS_PYTHON.get(version)
    if needed is None or sys.version_info[:2] >= needed:
        return sys.executable, [str(path) for path in python_path(version)]
    base = newer_python(needed)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # Named by the dependency list too: a dependency fleet adds gets a venv that has it.
    digest = hashlib.sha256("\n".join(sorted(dependencies)).encode()).hexdigest()[:10]
    venv = cache_root() / f"venv-{base.parent.parent.name}-bokeh-{version}-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        for step in ([str(base), "-m", "venv", str(venv)],
                     [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                      *dependencies, f"bokeh=={version}"]):
            result = subprocess.run(step, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                _unavailable(f"cannot make {venv}: {result.stderr[-2000:]}")
        (venv / ".complete").touch()
    return str(python), [str(ROOT / "src")]


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


def static_dir(python: str, paths: list[str]) -> Path:
    """Where the Bokeh that ``python`` runs with ``paths`` first keeps its BokehJS."""
    if python != sys.executable:  # a venv of its own: ask it
        code = "from bokeh.util.paths import static_path; print(static_path())"
        found = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        return Path(found.stdout.strip())
    if paths:
        return Path(paths[0]) / "bokeh" / "server" / "static"
    from bokeh.util.paths import static_path

    return Path(static_path())


@pytest.mark.parametrize("version", VERSIONS)
def test_worker_made_signed_session_ids_and_a_websocket_session(
        version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python, paths = interpreter(version)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH", "")]))}
    # support.FleetProcess runs ``sys.executable -m fleet``; a newer Bokeh needs a newer Python.
    monkeypatch.setattr(sys, "executable", python)
    fleet = start(tmp_path, BOKEH_APP, "--session-ids", "signed", workers=1, env=env)
    monkeypatch.undo()
    with fleet.proc:
        host = f"localhost:{fleet.port}"
        # The first page runs the app for the first time (nothing runs it before a session, as
        # with bokeh serve): its imports (numpy; pandas before 3.9) happen now, so allow for them.
        status, _, page = http_get(f"http://127.0.0.1:{fleet.port}/bokeh_random", headers={"Host": host},
                                   timeout=60)
        assert status == 200, page[:500]
        # The worker runs that Bokeh: it serves that version's BokehJS.
        worker_port = fleet.status()["workers"][0]["port"]
        bundle = http_get(f"http://127.0.0.1:{worker_port}/static/js/bokeh.min.js")[2]
        assert bundle == (static_dir(python, paths) / "js" / "bokeh.min.js").read_bytes()
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
