"""The Bokeh section of fleet's settings.

``bokeh serve``'s deployment options, with the same names and units. Each reaches every Bokeh
worker with the same value (``fleet.bokeh_settings``); secrets only through the environment.
Meaningless for Tornado apps and --cmd. Read as ``config.bokeh``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.bokeh_values import (
    parse_existing_file,
    parse_milliseconds,
    parse_num_procs,
    parse_num_threads,
    parse_prefix,
    parse_session_ids,
    parse_whole_seconds,
)
from fleet.config.declare import option
from fleet.values import parse_bool, parse_file_path, parse_size, parse_text, parse_token


@dataclass(frozen=True)
class BokehSettings:
    """The Bokeh section (``config.bokeh``); frozen."""

    glob: bool = option(
        False, "--glob", is_flag=True, parse=parse_bool,
        help="Bokeh: treat each APP as a glob pattern (like bokeh serve --glob).",
    )
    prefix: str | None = option(
        None, "--prefix", parse=parse_prefix, metavar="PREFIX",
        help="Bokeh: URL prefix of every app (/dash: apps at /dash/<name>, BokehJS at "
             "/dash/static/).",
    )
    auth_module: str | None = option(
        None, "--auth-module", parse=parse_existing_file, metavar="PATH",
        help="Bokeh: Python module with auth hooks (get_user[_async], login_url, LoginHandler, "
             "logout_url, LogoutHandler). Also $BOKEH_AUTH_MODULE.",
    )
    cookie_secret: str | None = option(
        None, "--cookie-secret", parse=parse_text, metavar="SECRET", secret=True,
        help="Bokeh: secret for secure cookies. Prefer $BOKEH_COOKIE_SECRET (argv shows in ps); "
             "workers get it only through the environment.",
    )
    enable_xsrf_cookies: bool = option(
        False, "--enable-xsrf-cookies", is_flag=True, parse=parse_bool,
        help="Bokeh: Tornado's XSRF cookies (PUT/POST/DELETE handlers must send them).",
    )
    session_ids: str | None = option(
        None, "--session-ids", parse=parse_session_ids, metavar="MODE", show_default="$BOKEH_SIGN_SESSIONS",
        help="Bokeh: unsigned, signed or external-signed. Signed needs $BOKEH_SECRET_KEY; "
             "without one fleet makes one for this run (and warns).",
    )
    session_token_expiration: int | None = option(
        None, "--session-token-expiration", parse=parse_whole_seconds, metavar="SECONDS",
        show_default="300", help="Bokeh: how long a new session token may create a session.",
    )
    keep_alive: int | None = option(
        None, "--keep-alive", parse=parse_milliseconds, metavar="MILLISECONDS", show_default="37000",
        help="Bokeh: WebSocket keep-alive ping interval in MILLISECONDS (0: off).",
    )
    check_unused_sessions: int | None = option(
        None, "--check-unused-sessions", parse=parse_milliseconds, metavar="MILLISECONDS",
        show_default="17000", help="Bokeh: how often to look for unused sessions, in MILLISECONDS.",
    )
    unused_session_lifetime: int | None = option(
        None, "--unused-session-lifetime", parse=parse_milliseconds, metavar="MILLISECONDS",
        show_default="15000", help="Bokeh: how long an unused session lasts, in MILLISECONDS.",
    )
    stats_log_frequency: int | None = option(
        None, "--stats-log-frequency", parse=parse_milliseconds, metavar="MILLISECONDS",
        show_default="15000", help="Bokeh: how often each worker logs session stats, in MILLISECONDS.",
    )
    mem_log_frequency: int | None = option(
        None, "--mem-log-frequency", parse=parse_milliseconds, metavar="MILLISECONDS",
        show_default="0", help="Bokeh: how often each worker logs memory use, in MILLISECONDS.",
    )
    index: str | None = option(
        None, "--index", parse=parse_existing_file, metavar="PATH",
        help="Bokeh: Jinja template for the index page at the root (the prefix).",
    )
    disable_index: bool = option(
        False, "--disable-index", is_flag=True, parse=parse_bool,
        help="Bokeh: no index page at the root path.",
    )
    disable_index_redirect: bool = option(
        False, "--disable-index-redirect", is_flag=True, parse=parse_bool,
        help="Bokeh: do not redirect the root path to the only app.",
    )
    ico_path: str | None = option(
        None, "--ico-path", parse=parse_file_path, metavar="PATH",
        help="Bokeh: favicon.ico to serve, or 'none' for none.",
    )
    websocket_max_message_size: int | None = option(
        None, "--websocket-max-message-size", parse=parse_size, metavar="BYTES",
        show_default="20MiB", help="Bokeh: largest WebSocket message a worker accepts.",
    )
    websocket_compression_level: int | None = option(
        None, "--websocket-compression-level", parse=int, metavar="LEVEL",
        help="Bokeh: Tornado WebSocket compression_level.",
    )
    websocket_compression_mem_level: int | None = option(
        None, "--websocket-compression-mem-level", parse=int, metavar="LEVEL",
        help="Bokeh: Tornado WebSocket compression mem_level.",
    )
    include_headers: tuple[str, ...] = option(
        (), "--include-headers", parse=parse_token, multiple=True, metavar="HEADER...", default_factory=tuple,
        help="Bokeh: request headers the session context sees (default: all).",
    )
    exclude_headers: tuple[str, ...] = option(
        (), "--exclude-headers", parse=parse_token, multiple=True, metavar="HEADER...", default_factory=tuple,
        help="Bokeh: request headers kept from the session context.",
    )
    include_cookies: tuple[str, ...] = option(
        (), "--include-cookies", parse=parse_token, multiple=True, metavar="COOKIE...", default_factory=tuple,
        help="Bokeh: request cookies the session context sees (default: all).",
    )
    exclude_cookies: tuple[str, ...] = option(
        (), "--exclude-cookies", parse=parse_token, multiple=True, metavar="COOKIE...", default_factory=tuple,
        help="Bokeh: request cookies kept from the session context.",
    )
    num_procs: int = option(
        1, "--num-procs", parse=parse_num_procs, metavar="1",
        help="Bokeh's forking option; fleet refuses anything but 1: use -n/--workers.",
    )
    # Panel's (``panel serve``) options for Panel apps (``fleet.worker.panel_server``); Bokeh apps
    # ignore them. --basic-auth reaches workers only as $PANEL_BASIC_AUTH.
    basic_auth: str | None = option(
        None, "--basic-auth", parse=parse_text, metavar="PASSWORD|FILE", secret=True,
        help="Panel: password, or JSON file of user: password, for Panel's login page. Prefer "
             "$PANEL_BASIC_AUTH (argv shows in ps); workers get it only through the environment.",
    )
    oauth_provider: str | None = option(
        None, "--oauth-provider", parse=parse_token, metavar="PROVIDER",
        help="Panel: OAuth provider (github, google, ...); key and secrets from $PANEL_OAUTH_KEY, "
             "$PANEL_OAUTH_SECRET, $PANEL_OAUTH_ENCRYPTION, $PANEL_COOKIE_SECRET.",
    )
    admin: bool = option(
        False, "--admin", is_flag=True, parse=parse_bool,
        help="Panel: the admin dashboard at /admin (of the worker that serves it).",
    )
    warm: bool = option(
        False, "--warm", is_flag=True, parse=parse_bool,
        help="Panel: run each app once when a worker starts (each worker, each reload).",
    )
    reuse_sessions: bool = option(
        False, "--reuse-sessions", is_flag=True, parse=parse_bool,
        help="Panel: render new pages from a cached session of the same worker.",
    )
    global_loading_spinner: bool = option(
        False, "--global-loading-spinner", is_flag=True, parse=parse_bool,
        help="Panel: a loading spinner over the page until the app has rendered.",
    )
    setup: str | None = option(
        None, "--setup", parse=parse_existing_file, metavar="PATH",
        help="Panel: a script each worker runs once at start, before any session.",
    )
    num_threads: int | None = option(
        None, "--num-threads", parse=parse_num_threads, metavar="N",
        help="Panel: threads per worker for Panel's callbacks (0: one per CPU).",
    )
    liveness: bool = option(
        False, "--liveness", is_flag=True, parse=parse_bool,
        help="Panel: /liveness on each worker (?endpoint=/app builds one document of it).",
    )
    # Made once per run by ``fleet.bokeh_settings.with_run_secrets`` and handed to every worker
    # in its environment (BOKEH_SECRET_KEY, BOKEH_SIGN_SESSIONS, BOKEH_COOKIE_SECRET): not an
    # option, never in argv or a generated configuration.
    bokeh_environment: tuple[tuple[str, str], ...] = ()


__all__ = ["BokehSettings"]
