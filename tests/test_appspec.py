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
