"""How a worker finds the Tornado Application in APP (in-process: loading needs no socket)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tornado.web

from fleet.appspec import detect
from fleet.worker.load import LoadError, load_tornado


def write(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def test_make_app_is_preferred_and_main_block_does_not_run(tmp_path: Path) -> None:
    path = write(tmp_path, "fleet_t_make.py", "import tornado.web\n"
                 "app = tornado.web.Application([], tag='instance')\n"
                 "def make_app():\n    return tornado.web.Application([], tag='factory')\n"
                 "if __name__ == '__main__':\n    raise SystemExit('main block ran')\n")
    assert load_tornado(detect(path)).settings["tag"] == "factory"


def test_module_level_application_instance_is_found(tmp_path: Path) -> None:
    path = write(tmp_path, "fleet_t_inst.py", "import tornado.web\nserver = tornado.web.Application([], tag='x')\n")
    assert load_tornado(detect(path)).settings["tag"] == "x"


def test_module_attr_imports_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "fleet_t_mod.py", "import tornado.web\ndef build():\n    return tornado.web.Application([], tag='m')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_tornado(detect("fleet_t_mod:build")).settings["tag"] == "m"
    with pytest.raises(LoadError, match="has no attribute 'nope'"):
        load_tornado(detect("fleet_t_mod:nope"))


def test_files_without_an_app_or_with_several_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="defines neither make_app"):
        load_tornado(detect(write(tmp_path, "fleet_t_none.py", "x = 1\n")))
    with pytest.raises(LoadError, match="several Applications .*a, b"):
        load_tornado(detect(write(tmp_path, "fleet_t_two.py", "import tornado.web\n"
                                  "a = tornado.web.Application([])\nb = tornado.web.Application([])\n")))
    with pytest.raises(LoadError, match="returned int"):
        load_tornado(detect(write(tmp_path, "fleet_t_int.py", "def make_app():\n    return 3\n")))
    assert isinstance(tornado.web.Application([]), tornado.web.Application)


# -- Bokeh apps: built the way bokeh serve builds them, run only per document ------------------

def test_bokeh_app_is_built_without_running_it_and_runs_once_per_document(tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    from fleet.worker.load import broken_app, load_bokeh

    runs = tmp_path / "runs.txt"
    path = write(tmp_path, "counted.py", "from bokeh.io import curdoc\nfrom bokeh.models import Div\n"
                 f"open({str(runs)!r}, 'a').write('run\\n')\n"
                 "curdoc().add_root(Div(text='x'))\n")
    application = load_bokeh(detect(path), [])
    assert broken_app(application) is None
    assert not runs.exists()  # built, compiled, not run
    assert len(application.create_document().roots) == 1
    application.create_document()
    assert runs.read_text() == "run\nrun\n"


def test_bokeh_app_reading_session_context_at_module_level_loads(tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    from fleet.worker.load import broken_app, load_bokeh

    path = write(tmp_path, "needs_session.py", "from bokeh.io import curdoc\n"
                 "arguments = curdoc().session_context.request.arguments\n")
    assert broken_app(load_bokeh(detect(path), [])) is None  # it would fail if it ran now


def test_broken_bokeh_apps_come_back_with_bokehs_failed_handler(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("bokeh")
    from fleet.worker.load import broken_app, load_bokeh

    path = write(tmp_path, "typo.py", "from bokeh.io import curdoc\nx = (\ncurdoc()\n")
    application = load_bokeh(detect(path), [])
    assert broken_app(application) == "Invalid syntax in 'typo.py' on line 2:\nx = ("
    assert "SyntaxError: '(' was never closed" in (broken_app(application, detail=True) or "")
    # Bokeh's answer for a failed handler: an empty document, the error logged each time.
    with caplog.at_level("ERROR", logger="bokeh.application.application"):
        assert application.create_document().roots == []
    assert "Error running application handler" in caplog.text and "typo.py" in caplog.text

    both = tmp_path / "both"
    both.mkdir()
    for name in ("main.py", "app_hooks.py", "server_lifecycle.py"):
        (both / name).write_text("from bokeh.io import curdoc\ncurdoc()\n")
    problem = broken_app(load_bokeh(detect(str(both)), []))
    assert problem is not None and problem.startswith("ValueError: Directory style apps can provide either")
