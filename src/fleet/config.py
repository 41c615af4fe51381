"""One frozen ``Config`` for every fleet command, built in one place.

Settings come, in order of precedence, from the command line, from the environment
(``FLEET_<OPTION>``, e.g. ``FLEET_WORKERS=4``), from a ``fleet.toml`` and from the defaults
below. ``build_config`` is the only function that merges them; it is pure (it takes the three
sources as mappings) so the precedence rules are unit-tested without a shell.

The click options in ``fleet.cli`` are generated from the ``metadata`` of the fields here, so
an option is declared exactly once. This module does no I/O except ``load_toml``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from fleet.bokeh_values import (
    parse_existing_file,
    parse_milliseconds,
    parse_num_procs,
    parse_prefix,
    parse_session_ids,
    parse_whole_seconds,
)
from fleet.values import (  # re-exported: fleet.config is where options and their parsers meet
    DEFAULT_METRICS_ALLOW,
    GIB,
    KIB,
    MIB,
    parse_bool,
    parse_count,
    parse_duration,
    parse_host_entry,
    parse_file_path,
    parse_host,
    parse_hostport,
    parse_hsts,
    parse_log_level,
    parse_network,
    parse_origin_entry,
    parse_port,
    parse_positive_int,
    parse_size,
    parse_socket_path,
    parse_text,
    parse_token,
    parse_trusted_proxy,
    parse_url_path,
)


# Commands a field belongs to. ``config`` takes the same options as ``up`` (design: "same
# options as up"); ``balance`` takes only what the proxy needs.
UP = frozenset({"up", "config"})
PROXY = frozenset({"up", "config", "balance"})
CONTROL = frozenset({"up", "config", "balance", "status", "reload", "scale", "down", "logs"})


# Where the TLS key's password comes from (never argv); neither reaches a worker.
SSL_PASSWORD_ENV = ("FLEET_SSL_PASSWORD", "BOKEH_SSL_PASSWORD")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the source."""


def parse_fleet_name(value: str) -> str:
    from fleet.discovery import valid_name

    return valid_name(str(value))


PROXY_KINDS = ("builtin", "nginx", "haproxy")


def parse_proxy_kind(value: str) -> str:
    kind = str(value).strip().lower()
    if kind not in PROXY_KINDS:
        raise ValueError(f"unknown data plane {value!r} (one of {', '.join(PROXY_KINDS)})")
    return kind


def parse_proxy_processes(value: str | int) -> int:
    """``N`` (1..64) or ``auto`` (stored as 0, resolved at start by ``fleet.proxyprocs``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError(f"must be auto or 1..64: {value}")
    return number


def _default_workers() -> int:
    from fleet.cpulimit import default_workers  # the cgroup's CPU quota in a container

    return default_workers()


def option(
    default: Any,
    *flags: str,
    help: str,
    parse: Callable[[Any], Any] = str,
    commands: frozenset[str] = UP,
    multiple: bool = False,
    is_flag: bool = False,
    metavar: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    show_default: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a Config field together with its command-line option.

    A ``secret`` option is never written back out (``fleet config``, comments, worker argv)."""
    metadata = {
        "flags": flags,
        "help": help,
        "parse": parse,
        "commands": commands,
        "multiple": multiple,
        "is_flag": is_flag,
        "metavar": metavar,
        "show_default": show_default,
        "secret": secret,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    """Every setting of a fleet run. Built by ``build_config``; never mutated."""

    # What to run (positional arguments of ``up``/``config``, not options).
    app: str | None = None
    extra_apps: tuple[str, ...] = ()  # `fleet up a.py b/ c.ipynb`: b/ and c.ipynb (Bokeh apps only)
    app_args: tuple[str, ...] = ()  # after --args (or the older --), for every app

    cmd: str | None = option(
        None, "--cmd", parse=parse_text, metavar="'CMD {port}'",
        help="Run any server command instead of APP; {port} and $PORT give each worker its port.",
    )
    workers: int = option(
        None, "-n", "--workers", parse=parse_positive_int, default_factory=_default_workers,
        show_default="CPU count, or the container's CPU limit", help="Number of worker processes.",
    )
    port: int = option(
        5006, "--port", parse=parse_port, commands=CONTROL,
        help="Public port of the built-in proxy.",
    )
    address: str = option(
        "127.0.0.1", "--address", parse=parse_host, commands=PROXY, help="Address the proxy listens on.",
    )
    base_port: int = option(
        5100, "--base-port", parse=parse_port,
        help="Port of worker 0 of the first generation; worker i listens on base-port + i.",
    )
    surge_base_port: int | None = option(
        None, "--surge-base-port", parse=parse_port,
        show_default="base-port + max(100, workers), moved past --port",
        help="The second port block: generations alternate between --base-port and this "
             "(a reload starts the new workers here while the old ones drain). Unused with "
             "--no-proxy, which restarts workers one at a time on the same ports.",
    )
    reload_batch: int = option(
        1, "--reload-batch", parse=parse_positive_int,
        help="How many new workers a reload starts at a time (each start imports the app). The "
             "old generation serves meanwhile and drains once all are ready: while it drains, a "
             "reload costs up to one more worker's memory per worker.",
    )
    drain_timeout: float = option(
        3600.0, "--drain-timeout", parse=parse_duration, metavar="SECONDS",
        help="How long a replaced worker keeps serving its in-flight requests and open "
             "WebSockets before SIGTERM (0: at once).",
    )
    unix_socket: str | None = option(
        None, "--unix-socket", parse=parse_socket_path, metavar="PATH", commands=PROXY,
        help="Also listen on this unix domain socket.",
    )
    no_proxy: bool = option(
        False, "--no-proxy", is_flag=True, parse=parse_bool,
        help="Run only the supervised workers (for an external nginx/Apache/HAProxy). Ports stay "
             "fixed, so a reload restarts workers one at a time on their own ports (no blue/green "
             "generations, no draining of open WebSockets).",
    )
    proxy: str = option(
        "builtin", "--proxy", parse=parse_proxy_kind, metavar="builtin|nginx|haproxy",
        commands=frozenset({"up"}),
        help="Data plane in front of the workers: fleet's built-in proxy, or nginx / HAProxy run "
             "by fleet as a supervised child with the `fleet config` configuration (files in "
             "fleet's private runtime directory). haproxy: workers join, drain (affinity kept) and "
             "leave through its runtime API; --worker-max-conns and --queue-timeout are its "
             "maxconn and timeout queue; its metrics at METRICS-PATH/haproxy. nginx: a graceful "
             "reload per change; a replaced worker gets no new requests and is stopped once every "
             "nginx worker that could still use it has exited (or --drain-timeout), but nginx "
             "has no affinity cookie (--sticky is dropped with a warning), no drain of pinned "
             "clients, no per-worker counts and no queue (a full --worker-max-conns gives 502); "
             "stub_status at METRICS-PATH/nginx. See the README.",
    )
    metrics_path: str = option(
        "/metrics", "--metrics-path", parse=parse_url_path, commands=PROXY,
        help="URL path of the Prometheus metrics.",
    )
    metrics_port: int | None = option(
        None, "--metrics-port", parse=parse_port, commands=PROXY,
        show_default="none: served on the proxy port",
        help="Serve metrics on their own listener on this port.",
    )
    no_metrics: bool = option(
        False, "--no-metrics", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Do not serve Prometheus metrics.",
    )
    health_path: str | None = option(
        None, "--health-path", parse=parse_url_path, commands=PROXY,
        show_default="none: a TCP connect is the readiness probe",
        help="Readiness probe: a GET of this path must answer 2xx.",
    )
    start_timeout: float = option(
        60.0, "--start-timeout", parse=parse_duration, metavar="SECONDS",
        help="A worker not ready within this time is restarted.",
    )
    graceful_timeout: float = option(
        30.0, "--graceful-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="On stop/reload, how long in-flight requests may take before workers are killed.",
    )
    sticky: bool = option(
        True, "--sticky/--no-sticky", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Pin a client to a worker with the fleet_affinity cookie.",
    )
    max_body_size: int = option(
        100 * MIB, "--max-body-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="100MiB", help="Largest request body accepted (413 above).",
    )
    max_header_size: int = option(
        64 * KIB, "--max-header-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="64KiB", help="Largest request head accepted (431 above).",
    )
    upstream_timeout: float = option(
        60.0, "--upstream-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="A worker that sends no response head within this time gets a 504.",
    )
    client_timeout: float = option(
        75.0, "--client-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a keep-alive client connection idle for this long.",
    )
    header_timeout: float = option(
        30.0, "--header-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a client that has not sent a whole request head within this time.",
    )
    # -- trust, allowlists and TLS extras -------------------------
    use_xheaders: bool = option(
        False, "--use-xheaders", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Deprecated: same as --trusted-proxy for loopback and private networks "
             "(127.0.0.0/8, ::1, 10/8, 172.16/12, 192.168/16, fc00::/7, link-local).",
    )
    trusted_proxy: tuple[str, ...] = option(
        (), "--trusted-proxy", multiple=True, parse=parse_trusted_proxy, metavar="CIDR",
        commands=PROXY, default_factory=tuple, show_default="none",
        help="A proxy in front of fleet whose X-Forwarded-For/-Proto/-Host and X-Real-IP are "
             "believed and extended (repeatable; like nginx set_real_ip_from; 'unix:' for "
             "--unix-socket peers). Everyone else's are replaced. With --no-proxy: whose "
             "X-headers the workers honour besides loopback.",
    )
    allow_websocket_origin: tuple[str, ...] = option(
        (), "--allow-websocket-origin", multiple=True, parse=parse_origin_entry, metavar="HOST[:PORT]",
        commands=PROXY, default_factory=tuple,
        help="Origin allowed to open WebSockets (repeatable), with Bokeh's rules: no port means "
             ":80, '*' labels (*.example.com), '*' for any. The proxy refuses others with 403; "
             "Bokeh workers get the same list. Default: the proxy's own address.",
    )
    allow_host: tuple[str, ...] = option(
        (), "--allow-host", multiple=True, parse=parse_host_entry, metavar="HOST[:PORT]",
        commands=PROXY, default_factory=tuple,
        help="Host header (or absolute-form authority) accepted (repeatable); same rules as "
             "--allow-websocket-origin (no port means :80; HOST:* any port). Default: any.",
    )
    https_redirect_port: int | None = option(
        None, "--https-redirect-port", parse=parse_port, metavar="PORT", commands=PROXY,
        show_default="none",
        help="With TLS: also listen for plain HTTP on this port and redirect (301/308) to https "
             "on --port.",
    )
    hsts: int | None = option(
        None, "--hsts", parse=parse_hsts, metavar="SECONDS", commands=PROXY, show_default="off",
        help="With TLS: send Strict-Transport-Security: max-age=SECONDS (63072000 = 2 years).",
    )
    metrics_allow: tuple[str, ...] = option(
        DEFAULT_METRICS_ALLOW, "--metrics-allow", multiple=True, parse=parse_network, metavar="CIDR",
        commands=PROXY, show_default="loopback and private networks",
        help="Networks whose clients may see the built-in routes (/metrics, /_fleet/...) on the "
             "proxy port (repeatable; replaces the default). Others get 404, as for a path that "
             "does not exist. Use 0.0.0.0/0 and ::/0 to allow everyone.",
    )
    max_connections: int = option(
        10000, "--max-connections", parse=parse_count, metavar="N", commands=PROXY,
        help="Open client connections at most; past it the proxy stops accepting (clients wait "
             "in the listen backlog, like HAProxy maxconn) until one closes. 0: no limit.",
    )
    max_connections_per_ip: int = option(
        0, "--max-connections-per-ip", parse=parse_count, metavar="N", commands=PROXY,
        show_default="0: no limit",
        help="Open connections per client address; more are closed at once (like nginx "
             "limit_conn). Off by default: behind another proxy every client has its address.",
    )
    max_header_count: int = option(
        100, "--max-header-count", parse=parse_positive_int, metavar="N", commands=PROXY,
        help="Most header fields in a request head (431 above), like Apache LimitRequestFields.",
    )
    max_trailer_size: int = option(
        8 * KIB, "--max-trailer-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="8KiB",
        help="Largest trailer section of a chunked request body (431 above). Trailers are not "
             "forwarded to workers.",
    )
    max_buffered_request: int = option(
        256 * KIB, "--max-buffered-request", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="256KiB",
        help="Request bytes held per connection while they cannot go to a worker yet (waiting "
             "for one, or pipelined behind another request); past it the client is not read.",
    )
    min_body_rate: int = option(
        500, "--min-body-rate", parse=parse_count, metavar="BYTES_PER_S", commands=PROXY,
        help="After --client-timeout seconds of a request body, it must have averaged at least "
             "this many bytes/s (408 otherwise), like Apache mod_reqtimeout MinRate. 0: off.",
    )
    websocket_idle_timeout: float = option(
        3600.0, "--websocket-idle-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a WebSocket with no byte either way for this long (keep above Bokeh's "
             "--keep-alive ping interval).",
    )
    queue_timeout: float = option(
        10.0, "--queue-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="When no worker can take a request (none ready, or all at --worker-max-conns), it "
             "waits this long for one, then gets 503 (HAProxy timeout queue). 0: 503 at once.",
    )
    proxy_processes: int = option(
        1, "--proxy-processes", parse=parse_proxy_processes, metavar="N|auto", commands=PROXY,
        help="Proxy processes accepting on --port (SO_REUSEPORT), each supervised by the master; "
             "least-connections counts stay fleet-wide (shared memory). auto: one per 4 usable "
             "cores for `up` (the workers need the rest), one per usable core for `balance`, "
             "at most 16 (fleet.cpulimit.auto_proxy_processes).",
    )
    worker_max_conns: int = option(
        0, "--worker-max-conns", parse=parse_count, metavar="N", commands=PROXY,
        show_default="0: no cap",
        help="In-flight HTTP requests per worker at most (WebSockets do not count); more wait "
             "in the queue (HAProxy server maxconn).",
    )
    ssl_certfile: str | None = option(
        None, "--ssl-certfile", parse=parse_file_path, metavar="PATH", commands=PROXY,
        help="Serve HTTPS with this certificate (PEM).",
    )
    ssl_keyfile: str | None = option(
        None, "--ssl-keyfile", parse=parse_file_path, metavar="PATH", commands=PROXY,
        help="Private key for --ssl-certfile (password from $FLEET_SSL_PASSWORD or "
             "$BOKEH_SSL_PASSWORD). SIGHUP / fleet reload re-reads certificate and key.",
    )
    log_dir: str | None = option(
        None, "--log-dir", parse=parse_file_path, metavar="DIR",
        help="Also write each worker's output to DIR/w<i>.log (DIR/s<i>.log in the surge port block).",
    )
    # -- operations: log files, JSON output ------------------------------------
    log_max_size: int = option(
        100 * MIB, "--log-max-size", parse=parse_size, metavar="SIZE", show_default="100MiB",
        help="Rotate a --log-dir file when it would grow past this (0: never).",
    )
    log_keep: int = option(
        5, "--log-keep", parse=parse_count, metavar="N",
        help="Rotated --log-dir files kept (w1.log.1 ... w1.log.N; 0: truncate instead).",
    )
    log_json: bool = option(
        False, "--log-json", is_flag=True, parse=parse_bool,
        help="fleet's output as one JSON object per line (time, source, worker, message), for log "
             "shippers.",
    )
    # -- operations: hooks ---------------------------------------------------------
    on_ready: str | None = option(
        None, "--on-ready", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker becomes ready (env: FLEET_HOOK_EVENT, "
             "FLEET_WORKER_ID, FLEET_WORKER_PID, FLEET_WORKER_PORT).",
    )
    on_exit: str | None = option(
        None, "--on-exit", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker's process exits (not during fleet's own stop); "
             "also FLEET_EXIT_CODE or FLEET_EXIT_SIGNAL.",
    )
    on_crash_loop: str | None = option(
        None, "--on-crash-loop", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker starts crash-looping.",
    )
    hook_timeout: float = option(
        30.0, "--hook-timeout", parse=parse_duration, metavar="SECONDS",
        help="A hook still running after this long is killed (with its process group).",
    )
    max_memory: int | None = option(
        None, "--max-memory", parse=parse_size, metavar="SIZE",
        help="Soft limit: replace a worker whose process tree uses more memory than this "
             "(a new worker starts, the old one drains).",
    )
    max_memory_hard: int | None = option(
        None, "--max-memory-hard", parse=parse_size, metavar="SIZE",
        help="Hard limit: kill at once a worker whose process tree uses more memory than this.",
    )
    max_requests: int = option(
        0, "--max-requests", parse=parse_count, metavar="N",
        help="Replace a worker after it answered about N requests (counted by the proxy; "
             "not with --no-proxy). 0: off.",
    )
    max_requests_jitter: int = option(
        0, "--max-requests-jitter", parse=parse_count, metavar="N",
        help="Add 0..N (random, per worker) to --max-requests so workers do not recycle together.",
    )
    max_age: float = option(
        0.0, "--max-age", parse=parse_duration, metavar="SECONDS",
        help="Replace a worker that has been ready this long. 0: off.",
    )
    worker_timeout: float = option(
        60.0, "--worker-timeout", parse=parse_duration, metavar="SECONDS",
        help="Kill and replace a ready worker whose event loop is blocked longer than this "
             "(0: off). APP workers prove it from inside their loop; --cmd workers only through "
             "--health-path (a 2xx within the timeout); a --cmd worker without --health-path "
             "has no hang detection.",
    )
    control_socket: str | None = option(
        None, "--control-socket", parse=parse_socket_path, metavar="PATH", commands=CONTROL,
        show_default="$XDG_RUNTIME_DIR/fleet/<name>.sock, else /tmp/fleet-<uid>/<name>.sock",
        help="Unix socket for fleet status/reload/scale/down/logs (overrides --name and discovery).",
    )
    name: str | None = option(
        None, "--name", parse=parse_fleet_name, metavar="NAME", commands=CONTROL,
        show_default="the port (port0-<pid> for --port 0)",
        help="Name of the fleet: `fleet up` serves the control socket <name>.sock; the other "
             "commands pick the running fleet of that name.",
    )
    log_level: str = option(
        "info", "--log-level", parse=parse_log_level, commands=PROXY,
        help="debug, info, warning, error or critical.",
    )
    access_log: bool = option(
        False, "--access-log", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Log one line per proxied request.",
    )
    upstream: tuple[str, ...] = option(
        (), "--upstream", multiple=True, parse=parse_hostport, metavar="HOST:PORT",
        commands=frozenset({"config"}), default_factory=tuple,
        help="Upstream server for the generated configuration (repeatable); default: the workers.",
    )
    state_dir: str | None = option(
        None, "--state-dir", parse=parse_file_path, metavar="DIR", commands=frozenset({"config"}),
        help="Where the generated nginx/Apache/HAProxy config puts pid file, logs and temp "
             "files (lets the proxy run unprivileged); default: the system paths.",
    )
    # -- Bokeh: `bokeh serve`'s deployment options, same names and units -----------
    # Each reaches every Bokeh worker with the same value (``fleet.bokeh_settings``); secrets
    # only through the environment. Meaningless for Tornado apps and --cmd.
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
        (), "--include-headers", multiple=True, parse=parse_token, metavar="HEADER...", default_factory=tuple,
        help="Bokeh: request headers the session context sees (default: all).",
    )
    exclude_headers: tuple[str, ...] = option(
        (), "--exclude-headers", multiple=True, parse=parse_token, metavar="HEADER...", default_factory=tuple,
        help="Bokeh: request headers kept from the session context.",
    )
    include_cookies: tuple[str, ...] = option(
        (), "--include-cookies", multiple=True, parse=parse_token, metavar="COOKIE...", default_factory=tuple,
        help="Bokeh: request cookies the session context sees (default: all).",
    )
    exclude_cookies: tuple[str, ...] = option(
        (), "--exclude-cookies", multiple=True, parse=parse_token, metavar="COOKIE...", default_factory=tuple,
        help="Bokeh: request cookies kept from the session context.",
    )
    num_procs: int = option(
        1, "--num-procs", parse=parse_num_procs, metavar="1",
        help="Bokeh's forking option; fleet refuses anything but 1: use -n/--workers.",
    )
    # Made once per run by ``fleet.bokeh_settings.with_run_secrets`` and handed to every worker
    # in its environment (BOKEH_SECRET_KEY, BOKEH_SIGN_SESSIONS, BOKEH_COOKIE_SECRET): not an
    # option, never in argv or a generated configuration.
    bokeh_environment: tuple[tuple[str, str], ...] = ()

    # Not an option: the password comes only from the environment, never from argv.
    ssl_password: str | None = None

    # -- derived values ------------------------------------------------------------------
    def apps(self) -> tuple[str, ...]:
        """Every APP as typed (patterns with --glob; see ``fleet.bokeh_settings.app_paths``)."""
        return (self.app, *self.extra_apps) if self.app else ()

    def worker_port(self, index: int, block: int = 0) -> int:
        """Port of worker ``index`` in port block 0 (``--base-port``) or 1 (``--surge-base-port``)."""
        return (self.base_port if block == 0 else self.surge_base()) + index

    def trusted_proxies(self) -> tuple[str, ...]:
        """--trusted-proxy, plus loopback and private networks for the deprecated --use-xheaders."""
        if not self.use_xheaders:
            return self.trusted_proxy
        from fleet.balancer.trust import LOOPBACK, PRIVATE

        return tuple(dict.fromkeys((*self.trusted_proxy, *LOOPBACK, *PRIVATE)))

    def worker_id(self, index: int, generation: int = 1) -> str:
        """``g<generation>w<index>``: unique across generations, no ``.`` (Bokeh splits signed
        session ids at the first dot)."""
        from fleet.supervisor.generations import worker_id

        return worker_id(generation, index)

    def surge_base(self) -> int:
        """``--surge-base-port``, or a default that overlaps neither the base block nor --port."""
        if self.surge_base_port is not None:
            return self.surge_base_port
        return default_surge_base(self.base_port, self.workers, self.port)

    def public_url(self) -> str:
        scheme = "https" if self.ssl_certfile else "http"
        host = "localhost" if self.address in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.address
        return f"{scheme}://{host}:{self.port}"


def default_surge_base(base_port: int, workers: int, proxy_port: int) -> int:
    """``base + max(100, workers)``, moved past the proxy port if that falls in the block, and
    below the base block if the block would pass 65535."""
    span = max(100, workers)
    surge = base_port + span
    if surge <= proxy_port < surge + workers:
        surge = proxy_port + 1
    if surge + workers - 1 > 65535:
        surge = max(1, base_port - span)
        if surge <= proxy_port < surge + workers:
            surge = max(1, proxy_port - workers)
    return surge


def option_fields() -> list[Any]:
    """The Config fields that are command-line options, in declaration order."""
    return [f for f in fields(Config) if f.metadata.get("flags")]


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def _env_name(name: str) -> str:
    return "FLEET_" + name.upper()


def _parse_value(f: Any, raw: Any, source: str) -> Any:
    parse = f.metadata["parse"]
    flag = f.metadata["flags"][-1].split("/")[0]
    try:
        if f.metadata["multiple"]:
            if isinstance(raw, str):
                items = [item for item in re.split(r"[,\s]+", raw) if item]
            elif isinstance(raw, (list, tuple)):
                items = list(raw)
            else:
                raise ValueError(f"expected a list, got {raw!r}")
            return tuple(parse(item) for item in items)
        if raw is None:
            return None
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{flag} (from {source}): {exc}") from None


def build_config(
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    toml: Mapping[str, Any],
    *,
    command: str = "up",
    **positional: Any,
) -> Config:
    """Merge the three sources (CLI > env > toml > default) into a validated Config.

    ``cli`` holds only the options given on the command line (name -> value). ``toml`` keys
    may use dashes or underscores (``base-port`` or ``base_port``); an unknown key is an
    error rather than silently ignored, since a typo there would otherwise go unnoticed.
    """
    known = {f.name: f for f in option_fields()}
    toml_values: dict[str, Any] = {}
    for key, value in toml.items():
        name = key.replace("-", "_")
        if name in {"app", "app_args"}:
            toml_values[name] = value
            continue
        if name not in known:
            raise ConfigError(f"fleet.toml: unknown setting {key!r}")
        toml_values[name] = value

    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in cli and cli[name] is not None and not (f.metadata["multiple"] and cli[name] == ()):
            values[name] = _parse_value(f, cli[name], "command line")
        elif _env_name(name) in env:
            values[name] = _parse_value(f, env[_env_name(name)], f"${_env_name(name)}")
        elif name in toml_values:
            values[name] = _parse_value(f, toml_values[name], "fleet.toml")
    apps = positional.get("app") or toml_values.get("app")
    if apps:
        apps = (apps,) if isinstance(apps, str) else tuple(str(app) for app in apps)
        values["app"], values["extra_apps"] = apps[0], apps[1:]
        for app in apps:  # APP reaches every generated file too
            try:
                parse_text(app, "APP")
            except ValueError as exc:
                raise ConfigError(f"APP: {exc}") from None
    if positional.get("app_args"):
        values["app_args"] = tuple(positional["app_args"])
    elif "app_args" in toml_values:
        values["app_args"] = tuple(str(arg) for arg in toml_values["app_args"])
    for name in SSL_PASSWORD_ENV:  # FLEET_ first; Bokeh's name is accepted too
        if name in env:
            values["ssl_password"] = env[name]
            break
    config = Config(**values)
    validate(config, command)
    return config


def validate(config: Config, command: str) -> None:
    """Cross-field rules; raise ConfigError naming the options involved."""
    if command in {"up", "config"}:
        if config.app and config.cmd:
            raise ConfigError("give either APP or --cmd, not both")
        if not config.app and not config.cmd:
            raise ConfigError("missing APP (a .py file, a directory, module:attr) or --cmd")
        if config.cmd and config.app_args:
            raise ConfigError("--args goes to APP; a --cmd command takes its arguments itself")
        last_port = config.base_port + config.workers - 1
        if last_port > 65535:
            raise ConfigError(
                f"--base-port {config.base_port} with {config.workers} workers needs ports up to "
                f"{last_port}, past 65535"
            )
        if not config.no_proxy and config.base_port <= config.port <= last_port:
            raise ConfigError(
                f"--port {config.port} falls inside the worker ports "
                f"{config.base_port}-{last_port}; choose another --port or --base-port"
            )
        if not config.no_proxy:
            _validate_surge_block(config)
        if config.no_proxy and config.proxy != "builtin":
            raise ConfigError(f"--proxy {config.proxy} and --no-proxy contradict each other "
                              f"(--no-proxy runs no data plane at all)")
        if config.proxy_processes != 1 and config.no_proxy:
            raise ConfigError("--proxy-processes needs the built-in proxy (it is not used with --no-proxy)")
        if config.proxy_processes != 1 and config.proxy != "builtin":
            raise ConfigError(f"--proxy-processes is for the built-in proxy; {config.proxy} sets its "
                              f"own worker processes (nginx worker_processes, HAProxy nbthread)")
        if config.max_requests and config.no_proxy:
            raise ConfigError("--max-requests needs the built-in proxy (it counts the requests); "
                              "with --no-proxy use --max-age or --max-memory")
        if config.max_requests_jitter and not config.max_requests:
            raise ConfigError("--max-requests-jitter needs --max-requests")
        if config.max_memory and config.max_memory_hard and config.max_memory_hard <= config.max_memory:
            raise ConfigError("--max-memory-hard must be larger than --max-memory (the soft limit)")
    if 0 < config.worker_timeout < 1:
        raise ConfigError(f"--worker-timeout {config.worker_timeout:g}: use 0 (off) or at least 1 "
                          f"second (a busy but healthy event loop would be killed)")
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together")
    if config.https_redirect_port is not None:
        if not config.ssl_certfile:
            raise ConfigError("--https-redirect-port needs TLS (--ssl-certfile/--ssl-keyfile)")
        if config.https_redirect_port == config.port and config.port != 0:
            raise ConfigError("--https-redirect-port must differ from --port")
    if config.hsts is not None and not config.ssl_certfile:
        raise ConfigError("--hsts needs TLS (--ssl-certfile/--ssl-keyfile): browsers ignore it over http")
    if config.metrics_port is not None and config.metrics_port == config.port and config.port != 0:
        raise ConfigError("--metrics-port must differ from --port (omit it to serve on --port)")


def _validate_surge_block(config: Config) -> None:
    surge = config.surge_base()
    base, count = config.base_port, config.workers
    last = surge + count - 1
    flag = "--surge-base-port" if config.surge_base_port is not None else "the default surge block"
    if last > 65535:
        raise ConfigError(f"{flag} {surge} with {count} workers needs ports up to {last}, past 65535")
    if surge <= base + count - 1 and base <= last:
        raise ConfigError(f"{flag} {surge}-{last} overlaps the --base-port block "
                          f"{base}-{base + count - 1}; the two blocks must be apart")
    if surge <= config.port <= last:
        raise ConfigError(f"--port {config.port} falls inside the surge block {surge}-{last}; "
                          f"choose another --port or --surge-base-port")
    if config.metrics_port is not None and (surge <= config.metrics_port <= last
                                            or base <= config.metrics_port < base + count):
        raise ConfigError(f"--metrics-port {config.metrics_port} falls inside the worker ports")


def load_toml(path: str | None, *, explicit: bool) -> dict[str, Any]:
    """Read ``fleet.toml`` (a ``[fleet]`` table or top-level keys). Missing is fine unless named."""
    target = Path(path or "fleet.toml")
    if not target.exists():
        if explicit:
            raise ConfigError(f"config file not found: {target}")
        return {}
    try:
        data = tomllib.loads(target.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {target}: {exc}") from None
    table = data.get("fleet", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{target}: [fleet] must be a table")
    return table


__all__ = [
    "Config", "ConfigError", "build_config", "load_toml", "option_fields", "parse_size",
    "parse_duration", "parse_bool", "replace", "validate",
]
