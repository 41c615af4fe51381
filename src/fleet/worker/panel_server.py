"""A Panel worker: the Bokeh server with Panel's handlers, pages and options, as ``panel serve``
builds it.

Panel (HoloViz) runs on the Bokeh server: importing ``panel.io.server`` installs its document,
autoload and WebSocket handlers, its root (index) page and its ``Server`` in Bokeh's place, and
``panel.command.serve.Serve.customize_kwargs`` turns ``panel serve``'s options into ``Server``
arguments and settings of ``panel.config``. This module calls the same code with the options
fleet maps (``panel_argv``) and adds what fleet needs on top, as for a Bokeh worker
(``fleet.worker.bokeh``): session ids that start with the worker id (also the ones Panel makes
itself when ``--reuse-sessions`` hands a page a reused session), and one broken app that does
not stop the others.

What runs at start, in each worker: Panel's import; a script, notebook or directory app is
compiled, not run (its code runs per session, as with ``panel serve``); a module with a dict
``APPS`` is imported (the dict is made by running it, as ``pn.serve`` needs it made); then
``--setup`` and, with ``--warm``, one session of each app, as ``panel serve`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, Callable

from fleet.appspec import AppSpec, Flavour

# The Panel options of fleet's Bokeh section that become ``panel serve`` arguments (the worker
# gets them in its JSON settings; ``--basic-auth`` comes as $PANEL_BASIC_AUTH instead: a secret).
_FLAGS = {"admin": "--admin", "warm": "--warm", "reuse_sessions": "--reuse-sessions",
          "global_loading_spinner": "--global-loading-spinner"}
_VALUES = {"oauth_provider": "--oauth-provider", "setup": "--setup", "num_threads": "--num-threads"}
BASIC_AUTH_ENV = "PANEL_BASIC_AUTH"  # how fleet.bokeh_settings hands --basic-auth to workers
LIVENESS_ENDPOINT = "liveness"  # panel serve's default --liveness-endpoint


def panel_argv(settings: dict[str, Any]) -> list[str]:
    """The ``panel serve`` options for ``settings`` (pure), without files and without the ones
    fleet does itself (``--warm`` and ``--liveness`` run on fleet's own applications)."""
    argv: list[str] = []
    for name, flag in _FLAGS.items():
        if settings.get(name) and name != "warm":
            argv.append(flag)
    for name, flag in _VALUES.items():
        if settings.get(name) is not None:
            argv += [flag, str(settings[name])]
    return argv


def panel_args(argv: list[str]) -> tuple[Any, argparse.Namespace]:
    """``panel serve``'s command and its own parser applied to ``argv`` (every option it has,
    with its defaults)."""
    from panel.command.serve import Serve

    parser = argparse.ArgumentParser(prog="panel serve")
    return Serve(parser=parser), parser.parse_args(argv)


def _handler(path: str, argv: list[str]) -> Any:
    """The handler ``panel serve`` builds for ``path`` (compiles it, runs none of it)."""
    from bokeh.application.handlers.directory import DirectoryHandler
    from panel.io.handlers import NotebookHandler, ScriptHandler

    if os.path.isdir(path):
        return DirectoryHandler(filename=path, argv=argv)
    if path.endswith(".ipynb"):
        return NotebookHandler(filename=path, argv=argv)
    return ScriptHandler(filename=path, argv=argv)


def _dict_apps(spec: AppSpec, argv: list[str]) -> dict[str, Any]:
    """The apps of a module's ``APPS`` dict, as ``pn.serve(APPS)`` would build them."""
    from panel.io.application import build_applications

    from fleet.worker.load import LoadError, _import_file

    assert spec.path is not None
    sys.argv = [spec.path, *argv]
    module = _import_file(spec.path)
    apps = getattr(module, "APPS", None)
    if not isinstance(apps, dict) or not apps:
        raise LoadError(f"{os.path.basename(spec.path)}: APPS must be a non-empty dict of "
                        f"{{name: Panel object, function or path}}, not {type(apps).__name__}")
    return build_applications({str(name): app for name, app in apps.items()})


def panel_applications(specs: list[AppSpec], argv: list[str]) -> dict[str, Any]:
    """``{url path: Application}`` for every APP; a script, notebook or directory whose handler
    failed is kept (Bokeh answers its sessions with the error) and named by ``broken_app``."""
    from panel.io.application import Application

    from fleet.worker.load import LoadError, _failed_handler

    applications: dict[str, Any] = {}
    for spec in specs:
        assert spec.path is not None
        if spec.flavour is Flavour.PANEL_APPS:
            built = _dict_apps(spec, argv)
        else:
            try:
                handler = _handler(spec.path, list(argv))
            except Exception as exc:  # noqa: BLE001 - any failure to build the handler is the app's
                handler = _failed_handler(f"{type(exc).__name__}: {exc}", traceback.format_exc())
            built = {spec.url_path: Application(handler)}
        clash = sorted(set(built) & set(applications))
        if clash:
            raise LoadError(f"two APPs would both be served at {clash[0]}; rename one")
        applications.update(built)
    return applications


def install_panel_session_ids(make_session_id: Callable[..., Any] | None) -> None:
    """Panel makes a session id itself for a page that reuses a session (``--reuse-sessions``);
    it must carry the worker id too (``make_session_id``: fleet.worker.bokeh's maker), or that
    page's WebSocket would make a new session on whichever worker the proxy picked."""
    import panel.io.server as panel_server

    if make_session_id is not None and hasattr(panel_server, "generate_session_id"):
        panel_server.generate_session_id = make_session_id


def _warm(serve: Any, applications: dict[str, Any], reuse_sessions: bool, index: Any) -> None:
    """``--warm``: one session of each app now, as ``panel serve --warm`` makes; an app that fails
    is named and the others still serve."""
    for url, application in applications.items():
        try:
            serve.warm_applications({url: application}, reuse_sessions, index=index)
        except Exception:  # noqa: BLE001 - the app's own error, shown as panel serve shows it
            sys.stderr.write(f"fleet.worker: --warm: Panel app {url} failed:\n{traceback.format_exc()}")


def build_panel_server(applications: dict[str, Any], app_argv: list[str], settings: dict[str, Any], *,
                       specs: list[AppSpec], server_kwargs: dict[str, Any],
                       make_session_id: Callable[..., Any] | None) -> Any:
    """Panel's Server for ``applications`` (``panel_applications``), with ``server_kwargs``
    (Bokeh's, as fleet.worker.bokeh makes them for this worker) and the Panel options in
    ``settings`` applied by ``panel serve``'s own code; nothing listens until it starts."""
    import panel.io.server
    from bokeh.core.validation import silence
    from bokeh.core.validation.warnings import EMPTY_LAYOUT
    from panel.io.liveness import LivenessHandler

    silence(EMPTY_LAYOUT, True)  # as panel serve does: an empty layout is fine in Panel
    files = [spec.path for spec in specs if spec.flavour is not Flavour.PANEL_APPS and spec.path]
    serve, args = panel_args([*files, *panel_argv(settings), "--args", *app_argv])
    # Panel lowercases $PANEL_BASIC_AUTH (a password "S3cret" would not match); as an argument it
    # keeps its case. Taken out of the environment: the app's subprocesses do not need it.
    args.basic_auth = os.environ.pop(BASIC_AUTH_ENV, None) or args.basic_auth
    kwargs = serve.customize_kwargs(args, server_kwargs)
    if settings.get("liveness"):
        kwargs["extra_patterns"].append(
            (rf"/{LIVENESS_ENDPOINT}", LivenessHandler, {"applications": applications}))
    if settings.get("warm"):
        _warm(serve, applications, bool(settings.get("reuse_sessions")), kwargs.get("index"))
    install_panel_session_ids(make_session_id)
    return panel.io.server.Server(applications, **kwargs)


__all__ = ["LIVENESS_ENDPOINT", "build_panel_server", "install_panel_session_ids", "panel_applications",
           "panel_argv", "panel_args"]
