"""A Bokeh worker: ``bokeh serve``'s Server, built the way ``bokeh serve`` builds it.

``server_kwargs`` turns the master's JSON settings (``fleet.bokeh_settings.worker_settings``,
Bokeh's names and units) into ``bokeh.server.server.Server`` arguments, following
``bokeh/command/subcommands/serve.py``: milliseconds options become ``*_milliseconds``,
``--session-ids`` decides ``sign_sessions``/``generate_session_ids``, and the secrets come
from the environment through ``bokeh.settings`` (``BOKEH_SECRET_KEY``, ``BOKEH_SIGN_SESSIONS``,
``BOKEH_COOKIE_SECRET``), never from argv.

``install_session_ids`` makes the session ids this worker creates start with its
``FLEET_WORKER_ID`` (``w1-<random>``, signed as a whole when sessions are signed), so the
proxy can send a session's WebSocket to the worker that made it without a cookie; with
``FLEET_HOST_ID`` (``fleet up --host-id``) they start with the host too (``h1~w1-<random>``,
``fleet.hostids``), so a front tier in front of several hosts can do the same one level up.
It replaces ``generate_session_id`` where Bokeh's session-making code imported it
(``bokeh.server.views.session_handler`` up to 3.9, ``bokeh.server.core`` from 3.10), which is
private API: ``SUPPORTED_BOKEH`` says which versions it was checked against (pyproject pins
the same range), and on anything unexpected the worker keeps Bokeh's own ids and says so.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable

from fleet.hostids import valid_host_id, worker_key

log = logging.getLogger("fleet.worker")

# bokeh versions whose session-making code calls a module-level ``generate_session_id`` (looked
# up at call time) and whose token module has ``_get_random_string``/``_signature`` with these
# meanings (pyproject pins the same; tests/test_bokeh_versions.py runs a fleet with each minor
# version). Up to 3.9 that code is ``bokeh.server.views.session_handler``; from 3.10 (Python
# 3.12+) it is ``bokeh.server.core.create_session``.
SUPPORTED_BOKEH = ((3, 3), (3, 11))  # [low, high)
SESSION_IDS_MOVED = (3, 10)  # from this version on, ids are made in bokeh.server.core
# Not "." (Bokeh splits signed ids there). The proxy matches ``<known worker id>-``, so a worker
# id may itself contain "-".
SESSION_ID_SEPARATOR = "-"

_MILLISECONDS = {
    "keep_alive": "keep_alive_milliseconds",
    "check_unused_sessions": "check_unused_sessions_milliseconds",
    "unused_session_lifetime": "unused_session_lifetime_milliseconds",
    "stats_log_frequency": "stats_log_frequency_milliseconds",
    "mem_log_frequency": "mem_log_frequency_milliseconds",
}
_SAME_NAME = (
    "prefix", "index", "session_token_expiration", "websocket_max_message_size",
    "websocket_compression_level", "websocket_compression_mem_level",
    "include_headers", "exclude_headers", "include_cookies", "exclude_cookies",
)


def parse_settings(text: str) -> dict[str, Any]:
    settings = json.loads(text or "{}")
    if not isinstance(settings, dict):
        raise ValueError("--bokeh-settings must be a JSON object")
    return settings


def server_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """``Server(...)`` keyword arguments for ``settings``, as ``bokeh serve`` would pass them."""
    from bokeh.server.auth_provider import AuthModule, NullAuth
    from bokeh.settings import settings as bokeh_env

    kwargs: dict[str, Any] = {}
    for name, target in _MILLISECONDS.items():
        if settings.get(name) is not None:
            kwargs[target] = int(settings[name])
    for name in _SAME_NAME:
        if settings.get(name) is not None:
            kwargs[name] = settings[name]
    signed = bokeh_env.sign_sessions()  # some Bokeh versions hand back the env's text as is
    kwargs["sign_sessions"] = signed.strip().lower() in {"1", "true", "yes", "on"} \
        if isinstance(signed, str) else bool(signed)
    kwargs["secret_key"] = bokeh_env.secret_key_bytes()
    kwargs["generate_session_ids"] = True
    mode = settings.get("session_ids")
    if mode is not None:
        kwargs["sign_sessions"] = mode != "unsigned"
        kwargs["generate_session_ids"] = mode != "external-signed"
    if kwargs["sign_sessions"] and not kwargs["secret_key"]:
        raise RuntimeError("signed sessions need BOKEH_SECRET_KEY in the worker's environment")
    auth_module = bokeh_env.auth_module(settings.get("auth_module"))
    kwargs["auth_provider"] = AuthModule(auth_module) if auth_module else NullAuth()
    kwargs["xsrf_cookies"] = bokeh_env.xsrf_cookies(bool(settings.get("enable_xsrf_cookies", False)))
    kwargs["cookie_secret"] = bokeh_env.cookie_secret(None)
    kwargs["use_index"] = not settings.get("disable_index", False)
    kwargs["redirect_root"] = not settings.get("disable_index_redirect", False)
    kwargs["ico_path"] = bokeh_env.ico_path(settings.get("ico_path"))
    return kwargs


def bokeh_version() -> tuple[int, int]:
    import bokeh

    major, minor = bokeh.__version__.split(".")[:2]
    return int(major), int(minor)


def is_supported(version: tuple[int, int]) -> bool:
    low, high = SUPPORTED_BOKEH
    return low <= version < high


def worker_session_id_maker(worker_id: str, host_id: str | None = None) -> Callable[..., Any]:
    """A ``generate_session_id`` whose ids are ``[<host_id>~]<worker_id>-<random>`` (then signed)."""
    from bokeh.core.types import ID
    from bokeh.util import token

    if not worker_id or "." in worker_id:
        raise ValueError(f"worker id {worker_id!r} cannot prefix a session id (empty, or has a '.', "
                         f"where Bokeh splits signed ids)")
    prefix = worker_key(valid_host_id(host_id) if host_id else None, worker_id) + SESSION_ID_SEPARATOR

    def generate_session_id(secret_key: bytes | None = None, signed: bool = False) -> Any:
        session_id = prefix + token._get_random_string()
        if signed:
            session_id = ".".join([session_id, token._signature(session_id, secret_key)])
        return ID(session_id)

    return generate_session_id


def install_session_ids(worker_id: str | None, host_id: str | None = None) -> bool:
    """Make this worker's new session ids carry ``worker_id`` (and ``host_id``, when given);
    False (logged) if not possible."""
    if not worker_id or "." in worker_id:
        sys.stderr.write(f"fleet.worker: FLEET_WORKER_ID {worker_id!r} cannot prefix session ids; "
                         f"they stay Bokeh's own\n")
        return False
    if host_id:
        try:
            valid_host_id(host_id)
        except ValueError as exc:
            sys.stderr.write(f"fleet.worker: FLEET_HOST_ID: {exc}; session ids stay Bokeh's own\n")
            return False
    version = bokeh_version()
    from bokeh.util import token

    maker = _session_id_module(version)
    usable = (is_supported(version) and maker is not None and hasattr(maker, "generate_session_id")
              and hasattr(token, "_get_random_string") and hasattr(token, "_signature"))
    if not usable:
        sys.stderr.write(f"fleet.worker: bokeh {'.'.join(map(str, version))} is not one fleet's "
                         f"session-id prefix supports; session ids stay Bokeh's own (affinity "
                         f"falls back to the hash of the id and the cookie)\n")
        return False
    maker.generate_session_id = worker_session_id_maker(worker_id, host_id)  # type: ignore[union-attr]
    return True


def _session_id_module(version: tuple[int, int]) -> Any:
    """The module whose session-making code calls ``generate_session_id`` by its global name."""
    try:
        if version >= SESSION_IDS_MOVED:
            from bokeh.server import core

            return core if hasattr(core, "create_session") else None
        from bokeh.server.views import session_handler

        return session_handler
    except ImportError:
        return None


def build_server(paths: list[str], app_argv: list[str], settings: dict[str, Any], *, port: int,
                 address: str, origins: list[str], http_server_kwargs: dict[str, int],
                 worker_id: str | None, host_id: str | None = None) -> Any:
    """Build the Server for every app without running any app (``bokeh serve``'s way).

    An app that is broken before it runs (a syntax error, a handler Bokeh cannot build) is
    served anyway, with Bokeh's answer for a failed handler, and named on stderr; the others
    serve as usual. Only when every app is broken is it a boot error (LoadError): there would be
    nothing to serve, and the user should see the error at ``fleet up``, not in a browser.
    """
    from bokeh.server.server import Server

    from fleet.appspec import detect
    from fleet.worker.load import LoadError, broken_app, load_bokeh

    specs = [detect(path) for path in paths]
    if any(spec.panel for spec in specs):  # Panel serves plain Bokeh apps too, as panel serve does
        from fleet.worker.panel_server import panel_applications

        applications = panel_applications(specs, list(app_argv))
    else:
        applications = {spec.url_path: load_bokeh(spec, list(app_argv)) for spec in specs}
    broken = {url: app for url, app in applications.items() if broken_app(app) is not None}
    if broken and len(broken) == len(applications):
        raise LoadError("\n".join(f"Bokeh app {url} cannot run:\n{broken_app(app, detail=True)}"
                                  for url, app in broken.items()))
    for url, app in broken.items():
        sys.stderr.write(f"fleet.worker: Bokeh app {url} is broken: {broken_app(app)}\n"
                         f"fleet.worker: {url} answers each session with an empty page and logs "
                         f"this error, as bokeh serve does for an app whose code failed; the other "
                         f"apps serve\n")
    # Bokeh's own modules that nearly every app imports (library code, no app code): imported
    # now, so the first page a worker serves does not pay for them.
    import bokeh.layouts  # noqa: F401
    import bokeh.plotting  # noqa: F401

    installed = install_session_ids(worker_id, host_id)
    kwargs = dict(port=port, address=address, allow_websocket_origin=origins or None, use_xheaders=True,
                  http_server_kwargs=http_server_kwargs, **server_kwargs(settings))
    if any(spec.panel for spec in specs):
        from fleet.worker.panel_server import build_panel_server

        return build_panel_server(applications, list(app_argv), settings, specs=specs, server_kwargs=kwargs,
                                  make_session_id=worker_session_id_maker(worker_id, host_id)
                                  if installed and worker_id else None)
    return Server(applications, **kwargs)


__all__ = [
    "SESSION_ID_SEPARATOR", "SUPPORTED_BOKEH", "build_server", "install_session_ids",
    "is_supported", "parse_settings", "server_kwargs", "worker_session_id_maker",
]
