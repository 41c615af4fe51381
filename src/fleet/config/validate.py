"""Cross-field rules of a ``Config``: each broken rule is a ``ConfigError`` naming the options
involved. Pure; the port blocks are computed by ``fleet.supervisor.portblocks``.
"""

from __future__ import annotations

from fleet.config.declare import ConfigError
from fleet.config.model import Config
from fleet.supervisor.portblocks import MAX_PORT, block_range, overlaps


def validate(config: Config, command: str) -> None:
    """Raise ConfigError for the first rule ``config`` breaks for ``command``."""
    if command in {"up", "config"}:
        _validate_run(config)
    if 0 < config.worker_timeout < 1:
        raise ConfigError(f"--worker-timeout {config.worker_timeout:g}: use 0 (off) or at least 1 "
                          f"second (a busy but healthy event loop would be killed)")
    _validate_listeners(config)


def _validate_run(config: Config) -> None:
    """What ``up`` and ``config`` need: something to run, room for its ports, a coherent proxy."""
    if config.app and config.cmd:
        raise ConfigError("give either APP or --cmd, not both")
    if not config.app and not config.cmd:
        raise ConfigError("missing APP (a .py file, a directory, module:attr) or --cmd")
    if config.cmd and config.app_args:
        raise ConfigError("--args goes to APP; a --cmd command takes its arguments itself")
    last_port = config.base_port + config.workers - 1
    if last_port > MAX_PORT:
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
    if config.host_id and (config.proxy != "builtin" or config.no_proxy):
        raise ConfigError("--host-id needs the built-in proxy (nginx's and HAProxy's session routing "
                          "reads the worker at a fixed place in the session id, before any host)")
    if config.max_requests and config.no_proxy:
        raise ConfigError("--max-requests needs the built-in proxy (it counts the requests); "
                          "with --no-proxy use --max-age or --max-memory")
    if config.max_requests_jitter and not config.max_requests:
        raise ConfigError("--max-requests-jitter needs --max-requests")
    if config.max_memory and config.max_memory_hard and config.max_memory_hard <= config.max_memory:
        raise ConfigError("--max-memory-hard must be larger than --max-memory (the soft limit)")


def _validate_listeners(config: Config) -> None:
    """TLS and the extra listeners: complete, and not on the proxy's own port."""
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together")
    _validate_acme(config)
    tls = bool(config.ssl_certfile or config.domain)
    if config.https_redirect_port is not None:
        if not tls:
            raise ConfigError("--https-redirect-port needs TLS (--ssl-certfile/--ssl-keyfile)")
        if config.https_redirect_port == config.port and config.port != 0:
            raise ConfigError("--https-redirect-port must differ from --port")
    if config.hsts is not None and not tls:
        raise ConfigError("--hsts needs TLS (--ssl-certfile/--ssl-keyfile): browsers ignore it over http")
    if config.metrics_port is not None and config.metrics_port == config.port and config.port != 0:
        raise ConfigError("--metrics-port must differ from --port (omit it to serve on --port)")


def _validate_acme(config: Config) -> None:
    """--domain: fleet's own certificate, answered by the built-in proxy."""
    if not config.domain:
        return
    if config.ssl_certfile and not config.acme_challenges:  # acme_challenges: fleet up derived them
        raise ConfigError("--domain obtains the certificate itself: leave out --ssl-certfile/--ssl-keyfile")
    if config.no_proxy or config.proxy != "builtin":
        raise ConfigError("--domain needs the built-in proxy (it answers the ACME challenges and loads each "
                          "new certificate); with --proxy nginx|haproxy give --ssl-certfile from an ACME client")
    if len(set(config.domain)) != len(config.domain):
        raise ConfigError("--domain: a name is given twice")
    if len(config.domain) > 100:
        raise ConfigError("--domain: at most 100 names on one certificate (Let's Encrypt's limit)")


def _validate_surge_block(config: Config) -> None:
    surge = config.surge_base()
    base, count = config.base_port, config.workers
    surge_ports, base_ports = block_range(surge, count), block_range(base, count)
    last = surge_ports.stop - 1
    flag = "--surge-base-port" if config.surge_base_port is not None else "the default surge block"
    if last > MAX_PORT:
        raise ConfigError(f"{flag} {surge} with {count} workers needs ports up to {last}, past 65535")
    if overlaps(surge_ports, base_ports):
        raise ConfigError(f"{flag} {surge}-{last} overlaps the --base-port block "
                          f"{base}-{base_ports.stop - 1}; the two blocks must be apart")
    if config.port in surge_ports:
        raise ConfigError(f"--port {config.port} falls inside the surge block {surge}-{last}; "
                          f"choose another --port or --surge-base-port")
    if config.metrics_port is not None and (config.metrics_port in surge_ports
                                            or config.metrics_port in base_ports):
        raise ConfigError(f"--metrics-port {config.metrics_port} falls inside the worker ports")


__all__ = ["validate"]
