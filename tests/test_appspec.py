"""APP kind detection: Bokeh scripts and directories, Tornado files and module:attr, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.appspec import AppError, AppKind, classify_source, detect
from support import EXAMPLES


def test_bundled_examples_are_detected() -> None:
    bokeh = detect(str(EXAMPLES / "bokeh_random"))
    assert bokeh.kind is AppKind.BOKEH and bokeh.name == "bokeh_random" and bokeh.url_path == "/bokeh_random"
    tornado = detect(str(EXAMPLES / "tornado_hello.py"))
    assert tornado.kind is AppKind.TORNADO and tornado.url_path == "/"


def test_bokeh_script_needs_a_bokeh_import_and_curdoc(tmp_path: Path) -> None:
    script = tmp_path / "plot.py"
    script.write_text("from bokeh.io import curdoc\ncurdoc().add_root(None)\n")
    spec = detect(str(script))
    assert spec.kind is AppKind.BOKEH and spec.name == "plot" and spec.path == str(script)
    assert classify_source("import bokeh.plotting\nfrom x import curdoc\ncurdoc()\n") is AppKind.BOKEH
    # curdoc without importing bokeh is not enough
    assert classify_source("def curdoc(): pass\ncurdoc()\n") is AppKind.TORNADO


def test_script_defining_a_tornado_app_is_tornado_even_if_it_mentions_curdoc() -> None:
    source = "from bokeh.io import curdoc\nimport tornado.web\ndef make_app():\n    curdoc()\n"
    assert classify_source(source) is AppKind.TORNADO


def test_module_attr_is_tornado_and_relative_paths_use_cwd(tmp_path: Path) -> None:
    spec = detect("mypkg.server:make_app", cwd=str(tmp_path))
    assert (spec.kind, spec.module, spec.attr, spec.path, spec.name) == (
        AppKind.TORNADO, "mypkg.server", "make_app", None, "server")
    (tmp_path / "app.py").write_text("import tornado.web\napp = tornado.web.Application([])\n")
    assert detect("app.py", cwd=str(tmp_path)).path == str(tmp_path / "app.py")


def test_missing_app_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AppError, match=r"APP not found: 'nope\.py'"):
        detect("nope.py", cwd=str(tmp_path))


def test_directory_without_main_py_and_non_python_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AppError, match="has no main.py"):
        detect("empty", cwd=str(tmp_path))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(AppError, match="not a .py file"):
        detect("notes.txt", cwd=str(tmp_path))


def test_bokeh_script_with_a_syntax_error_is_still_a_bokeh_script(tmp_path: Path) -> None:
    # Even when the mistake is on the curdoc() line: it cannot be a Tornado app fleet imports.
    for source in ("from bokeh.io import curdoc\ncurdoc(.add_root(None)\n",
                   "from bokeh.io import curdoc\ndoc = curdoc\nif True\n    doc().add_root(None)\n"):
        assert classify_source(source) is AppKind.BOKEH, source
    assert classify_source("import tornado.web\nimport bokeh\nx = (\n") is AppKind.TORNADO
    assert classify_source("x = (\n") is AppKind.TORNADO  # no bokeh: the worker's import says why


def test_compile_problem_and_broken_apps_run_nothing(tmp_path: Path) -> None:
    from fleet.appspec import broken_apps, compile_problem

    marker = tmp_path / "ran"
    good = tmp_path / "good.py"
    good.write_text(f"from bokeh.io import curdoc\nopen({str(marker)!r}, 'w')\ncurdoc()\n")
    typo = tmp_path / "typo.py"
    typo.write_text("from bokeh.io import curdoc\nx = (\ncurdoc()\n")
    app_dir = tmp_path / "dash"
    app_dir.mkdir()
    (app_dir / "main.py").write_text("from bokeh.io import curdoc\ncurdoc()\n")
    (app_dir / "app_hooks.py").write_text("def on_server_loaded(context:\n    pass\n")
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text('{"cells": [{"cell_type": "code", "source": ["%matplotlib inline\\n", "x = 1\\n"]},'
                        ' {"cell_type": "markdown", "source": "not ( code"}], "nbformat": 4}')
    specs = [detect(str(path)) for path in (good, typo, app_dir, notebook)]
    assert compile_problem(specs[0]) is None and not marker.exists()
    assert compile_problem(specs[1]) == "Invalid syntax in 'typo.py' on line 2: '(' was never closed"
    assert (compile_problem(specs[2]) or "").startswith("Invalid syntax in 'app_hooks.py' on line 1")
    assert compile_problem(specs[3]) is None  # magics and markdown are not Python
    assert set(broken_apps(specs)) == {"/typo", "/dash"}
    assert broken_apps(specs[1:3]) == {}  # none compiles: the workers' boot error says why
    assert compile_problem(detect(str(EXAMPLES / "tornado_hello.py"))) is None
