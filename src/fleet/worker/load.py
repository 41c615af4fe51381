"""Load the app a worker serves: a Tornado ``Application`` or a Bokeh ``Application``.

Loading runs user code, so everything here may raise anything; ``fleet.worker.serve`` turns
such an exception into a boot error. Nothing here binds a socket.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
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


def load_bokeh(spec: AppSpec, argv: list[str]) -> Any:
    """Build the Bokeh ``Application`` for a script or directory and run it once.

    The trial run (one document, no session) is how a broken script is found at boot, the way
    a Tornado app's ImportError is: otherwise Bokeh would only log the error on every page
    view while the worker looks healthy.
    """
    from bokeh.command.util import build_single_handler_application

    assert spec.path is not None
    application = build_single_handler_application(spec.path, argv)
    # Bokeh logs a failing handler itself; we report it below, once, with the full traceback.
    bokeh_log = logging.getLogger("bokeh.application.application")
    previous = bokeh_log.level
    bokeh_log.setLevel(logging.CRITICAL)
    try:
        application.create_document()
    finally:
        bokeh_log.setLevel(previous)
    for handler in application.handlers:
        if handler.failed:
            raise LoadError(f"Bokeh app {spec.name} failed to run:\n{handler.error_detail}")
    return application
