"""Load the app a worker serves: a Tornado ``Application`` or a Bokeh ``Application``.

Loading a Tornado app imports it, so runs user code that may raise anything;
``fleet.worker.serve`` turns such an exception into a boot error. Loading a Bokeh app runs none
of the app's own code (``bokeh serve``'s way: the app runs per session) and reports a broken app
instead of raising. Nothing here binds a socket.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from fleet.appspec import AppSpec


class LoadError(RuntimeError):
    """The app module loaded but does not provide what fleet needs (message for the user)."""


def _import_file(path: str) -> ModuleType:
    """Import a .py file as a real module (registered in sys.modules, so pickling works).

    Not ``__main__``: an app's ``if __name__ == "__main__": app.listen(...)`` block must not run.
    """
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # sibling modules import as they do with `python app.py`
    name = os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:
        name = f"fleet_app_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _application_from(obj: Any, where: str) -> Any:
    import tornado.web

    if isinstance(obj, tornado.web.Application):
        return obj
    if callable(obj):
        made = obj()
        if isinstance(made, tornado.web.Application):
            return made
        raise LoadError(f"{where}() returned {type(made).__name__}, not a tornado.web.Application")
    raise LoadError(f"{where} is a {type(obj).__name__}, not a tornado.web.Application or a factory")


def load_tornado(spec: AppSpec) -> Any:
    """Return the ``tornado.web.Application`` that ``spec`` names.

    For a file without an explicit attribute: ``make_app()`` if defined, else a module-level
    ``Application`` instance (``app`` or ``application`` first, else the only one).
    """
    import tornado.web

    if spec.module is not None:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # `module:attr` resolves from where fleet was started
        module = importlib.import_module(spec.module)
        where = f"{spec.module}:{spec.attr}"
        if not hasattr(module, spec.attr or ""):
            raise LoadError(f"module {spec.module!r} has no attribute {spec.attr!r}")
        return _application_from(getattr(module, spec.attr or ""), where)
    assert spec.path is not None
    module = _import_file(spec.path)
    label = os.path.basename(spec.path)
    if callable(getattr(module, "make_app", None)):
        return _application_from(module.make_app, f"{label}:make_app")
    found = {name: value for name, value in vars(module).items() if isinstance(value, tornado.web.Application)}
    for preferred in ("app", "application"):
        if preferred in found:
            return found[preferred]
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        raise LoadError(f"{label} defines several Applications ({', '.join(sorted(found))}); "
                        f"name one with {os.path.splitext(label)[0]}:ATTR")
    raise LoadError(f"{label} defines neither make_app() nor a tornado.web.Application")


def _failed_handler(message: str, detail: str) -> Any:
    """Stands in for an app whose Bokeh handler could not even be built (a notebook without
    nbconvert, a directory with both ``app_hooks.py`` and ``server_lifecycle.py``): failed from the
    start, so Bokeh answers each session the way it answers any failed handler."""
    from bokeh.application.handlers.handler import Handler

    class Failed(Handler):
        def modify_document(self, doc: Any) -> None:
            return None  # nothing to run; Application.initialize_document logs the error

    handler = Failed()
    handler._failed = True
    handler._error = message
    handler._error_detail = detail
    return handler


def _bokeh_handler(path: str, argv: list[str]) -> Any:
    """The handler ``bokeh serve`` would build for ``path`` (``build_single_handler_application``
    without its raise on a failed handler): it compiles the script, notebook or ``main.py`` and
    runs none of it; a directory's ``app_hooks.py``/``server_lifecycle.py`` is imported, as
    ``bokeh serve`` imports it at start."""
    from bokeh.application.handlers.directory import DirectoryHandler
    from bokeh.application.handlers.notebook import NotebookHandler
    from bokeh.application.handlers.script import ScriptHandler

    if os.path.isdir(path):
        return DirectoryHandler(filename=path, argv=argv)
    if path.endswith(".ipynb"):
        return NotebookHandler(filename=path, argv=argv)
    return ScriptHandler(filename=path, argv=argv)


def load_bokeh(spec: AppSpec, argv: list[str]) -> Any:
    """The Bokeh ``Application`` for a script, notebook or directory, built without running it.

    As with ``bokeh serve``, the script (or ``main.py``, or the notebook's cells) runs once per
    session, when a browser opens one, so an app may read ``curdoc().session_context`` at
    module level. What can be known without running it is checked: a syntax error, or a handler
    Bokeh cannot build. Such an app is still returned, with a failed handler (``broken_app``
    says why): Bokeh then answers each of its sessions as it answers an app whose code failed,
    with an empty document and the error logged.
    """
    from bokeh.application import Application

    assert spec.path is not None
    try:
        handler = _bokeh_handler(spec.path, argv)
    except Exception as exc:  # noqa: BLE001 - any failure to build the handler is the app's
        handler = _failed_handler(f"{type(exc).__name__}: {exc}", traceback.format_exc())
    return Application(handler)


def broken_app(application: Any, *, detail: bool = False) -> str | None:
    """Why a Bokeh ``Application`` from ``load_bokeh`` cannot run (with the traceback if
    ``detail``), or None."""
    for handler in application.handlers:
        if handler.failed:
            text = str(handler.error or "failed")
            return f"{text}\n{handler.error_detail or ''}".rstrip() if detail else text.rstrip()
    return None
