"""What every Bokeh worker of a fleet must agree on: ``bokeh serve``'s options and the secrets.

The master decides these once per run; each worker gets the same values:

- the options of the Bokeh section (``config.bokeh``: ``--prefix``, ``--keep-alive``, ...), as
  one JSON argument (``worker_settings``), in Bokeh's own units;
- the secrets only in the environment, under the names Bokeh reads (``BOKEH_SECRET_KEY``,
  ``BOKEH_SIGN_SESSIONS``, ``BOKEH_COOKIE_SECRET``), never in argv, where ``ps`` shows them.
  With signed session ids and no ``BOKEH_SECRET_KEY`` (or an auth module and no cookie
  secret), ``with_run_secrets`` makes one for this run: every worker then checks the others'
  signatures, but a fleet restart invalidates sessions and cookies, hence the warning.

Pure except ``app_paths`` (which expands ``--glob`` patterns on disk).
"""

from __future__ import annotations

import glob as globbing
import json
import os
import secrets
from dataclasses import fields, replace
from typing import Any, Mapping

from fleet.config import BokehSettings, Config, ConfigError, WorkerSettings
from fleet.config.declare import field_default

# The fields of the Bokeh section that a worker needs (secrets excluded: environment; --glob
# and --num-procs are the master's).
WORKER_FIELDS = (
    "prefix", "auth_module", "enable_xsrf_cookies", "session_ids", "session_token_expiration",
    "keep_alive", "check_unused_sessions", "unused_session_lifetime", "stats_log_frequency",
    "mem_log_frequency", "index", "disable_index", "disable_index_redirect", "ico_path",
    "websocket_max_message_size", "websocket_compression_level", "websocket_compression_mem_level",
    "include_headers", "exclude_headers", "include_cookies", "exclude_cookies",
    # Panel's (basic_auth excluded: a secret, $PANEL_BASIC_AUTH)
    "oauth_provider", "admin", "warm", "reuse_sessions", "global_loading_spinner", "setup",
    "num_threads", "liveness",
)

SECRET_KEY_ENV = "BOKEH_SECRET_KEY"
SIGN_SESSIONS_ENV = "BOKEH_SIGN_SESSIONS"
COOKIE_SECRET_ENV = "BOKEH_COOKIE_SECRET"
AUTH_MODULE_ENV = "BOKEH_AUTH_MODULE"
PANEL_BASIC_AUTH_ENV = "PANEL_BASIC_AUTH"
PANEL_COOKIE_SECRET_ENV = "PANEL_COOKIE_SECRET"  # Panel reads it first, then BOKEH_COOKIE_SECRET
PANEL_OAUTH_PROVIDER_ENV = "PANEL_OAUTH_PROVIDER"

_TRUE = {"1", "true", "yes", "on"}


def worker_settings(bokeh: BokehSettings) -> str:
    """The Bokeh options that differ from their defaults, as the worker's JSON argument."""
    defaults = {f.name: field_default(f) for f in fields(BokehSettings)}
    chosen: dict[str, Any] = {}
    for name in WORKER_FIELDS:
        value = getattr(bokeh, name)
        if value != defaults[name]:
            chosen[name] = list(value) if isinstance(value, tuple) else value
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def signs_sessions(bokeh: BokehSettings, environ: Mapping[str, str]) -> bool:
    """Bokeh's rule: ``--session-ids`` wins; without it, ``$BOKEH_SIGN_SESSIONS``."""
    if bokeh.session_ids is not None:
        return bokeh.session_ids != "unsigned"
    return environ.get(SIGN_SESSIONS_ENV, "").strip().lower() in _TRUE


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def with_run_secrets(config: Config, environ: Mapping[str, str],
                     make_secret: Any = _new_secret) -> tuple[Config, list[str]]:
    """``config`` with the environment every Bokeh worker gets, and the warnings to show."""
    environment, warnings = run_secrets(config.bokeh, environ, make_secret)
    return replace(config, bokeh_environment=environment), warnings


def run_secrets(bokeh: BokehSettings, environ: Mapping[str, str],
                make_secret: Any = _new_secret) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """The environment every Bokeh worker gets (sorted pairs), and the warnings to show.

    Secrets already in ``environ`` reach workers anyway (``worker_environment`` passes
    ``BOKEH_*`` through); only what fleet decides is added here.
    """
    env: dict[str, str] = {}
    warnings: list[str] = []
    # Never "false": bokeh.settings hands the text back and some of Bokeh's defaults read any
    # non-empty value as true. --session-ids unsigned reaches the worker in its settings.
    if bokeh.session_ids in {"signed", "external-signed"}:
        env[SIGN_SESSIONS_ENV] = "true"
    if signs_sessions(bokeh, environ) and not environ.get(SECRET_KEY_ENV):
        env[SECRET_KEY_ENV] = make_secret()
        warnings.append(
            f"signed session ids and no ${SECRET_KEY_ENV}: fleet made one for this run and gave it "
            f"to every worker. Sessions will not survive a restart of fleet, and nothing outside "
            f"this fleet can sign ids; set {SECRET_KEY_ENV} (e.g. from `fleet secret`)."
        )
    if bokeh.basic_auth:
        env[PANEL_BASIC_AUTH_ENV] = bokeh.basic_auth
    login = _login_option(bokeh, environ)
    if bokeh.cookie_secret:
        env[COOKIE_SECRET_ENV] = bokeh.cookie_secret
    elif login and not (environ.get(COOKIE_SECRET_ENV) or environ.get(PANEL_COOKIE_SECRET_ENV)):
        # Every worker must sign and check the same login cookie, or a login on one worker
        # would not count on the next.
        env[COOKIE_SECRET_ENV] = make_secret()
        warnings.append(
            f"{login} and no cookie secret: fleet made one for this run and gave it to "
            f"every worker. Login cookies will not survive a restart of fleet; set "
            f"{COOKIE_SECRET_ENV} (e.g. from `fleet secret`)."
        )
    return tuple(sorted(env.items())), warnings


def _login_option(bokeh: BokehSettings, environ: Mapping[str, str]) -> str | None:
    """The option that makes workers set login cookies (Bokeh's auth module, Panel's basic auth
    or OAuth), or None."""
    if bokeh.auth_module or environ.get(AUTH_MODULE_ENV):
        return "--auth-module"
    if bokeh.basic_auth or environ.get(PANEL_BASIC_AUTH_ENV):
        return "--basic-auth"
    if bokeh.oauth_provider or environ.get(PANEL_OAUTH_PROVIDER_ENV):
        return "--oauth-provider"
    return None


def app_paths(workers: WorkerSettings, bokeh: BokehSettings, cwd: str | None = None) -> list[str]:
    """Every APP, with ``--glob`` patterns expanded (sorted, like a shell would). Reads two
    sections: the APPs (Workers) and ``--glob`` (Bokeh)."""
    if not bokeh.glob:
        return list(workers.apps())
    base = cwd or os.getcwd()
    paths: list[str] = []
    for pattern in workers.apps():
        matches = sorted(globbing.glob(os.path.join(base, pattern)))
        if not matches:
            raise ConfigError(f"--glob: no APP matches {pattern!r}")
        paths += [os.path.relpath(match, base) for match in matches]
    return list(dict.fromkeys(paths))


__all__ = [
    "WORKER_FIELDS", "app_paths", "run_secrets", "signs_sessions", "with_run_secrets", "worker_settings",
]
