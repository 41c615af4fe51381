"""Pieces every generated configuration shares: who the upstream servers are, how fleet's sizes
and durations are spelled for other servers, and the ``fleet`` command line a Config stands for.

Everything here is a pure function of its arguments, so the renderers built on it are too.
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, dataclass, replace
from typing import Any

from fleet.config import GIB, KIB, MIB, Config, option_fields
from fleet.configgen.quoting import comment_line
from fleet.supervisor.generations import slot_label

# The proxy connects to a worker on the same machine (or LAN): a connect that takes longer
# than this means the worker is gone, and the request should go to another one.
CONNECT_TIMEOUT_SECONDS = 5

# How long an upgraded (WebSocket) connection may stay silent in both directions. Bokeh pings
# every 37 s by default, so an hour only ends connections that are really dead.

# Forwarding claims a client may not make (fleet's balancer.trust drops them from untrusted
# peers); the generated configs drop them too, besides replacing X-Forwarded-For/-Proto/-Host.
CLIENT_CLAIMS = ("X-Scheme", "Forwarded", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl",
                 "X-Url-Scheme", "Front-End-Https", "X-Client-IP")

AFFINITY_COOKIE = "fleet_affinity"


@dataclass(frozen=True)
class Upstream:
    """One server the external proxy balances over: the slot ``id`` (``w<i>``) at ``host:port``.

    An external proxy pins a client to an address, not to a process: with ``--no-proxy`` a
    reload restarts worker ``i`` in place on its port, its id going from ``g1w<i>`` to
    ``g2w<i>``, while the slot ``w<i>`` (the metrics label of that port) stays. So the
    affinity cookie of every generated configuration carries the slot: a cookie set before a
    reload still names the port that serves it after, and never names a worker that is gone.
    """

    id: str
    host: str
    port: int
    # Takes no new requests (a managed data plane: a worker not ready yet, or down).
    disabled: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def upstreams(config: Config) -> list[Upstream]:
    """The ``--upstream`` entries (other hosts running ``fleet up --no-proxy``), else the workers."""
    if config.upstream:
        result = []
        for index, entry in enumerate(config.upstream):
            host, _, port = entry.rpartition(":")
            result.append(Upstream(slot_label(0, index), host, int(port)))
        return result
    return [
        Upstream(slot_label(0, index), "127.0.0.1", config.worker_port(index))
        for index in range(config.workers)
    ]


def affinity_cookie_attributes(config: Config) -> str:
    """What follows ``fleet_affinity=<slot>`` in a Set-Cookie, as fleet's own proxy writes it:
    the ``--prefix`` as Path, HttpOnly, SameSite=Lax, and Secure behind TLS."""
    return (f"Path={config.prefix or '/'}; HttpOnly; SameSite=Lax"
            + ("; Secure" if config.ssl_certfile else ""))


def listen_address(address: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed, as nginx, Apache and HAProxy all accept."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def https_redirect(config: Config) -> tuple[int, str] | None:
    """``--https-redirect-port`` (with TLS): the plain-HTTP port that redirects to HTTPS and the
    ``:port`` suffix of the redirect target (empty for 443); None when there is no redirect."""
    redirect_port = config.https_redirect_port
    if not config.ssl_certfile or not redirect_port or redirect_port == config.port:
        return None
    return redirect_port, "" if config.port == 443 else f":{config.port}"


def hsts_value(config: Config) -> str | None:
    """The Strict-Transport-Security value for ``--hsts SECONDS`` (TLS only), else None."""
    if not config.ssl_certfile or not config.hsts:
        return None
    return f"max-age={config.hsts}"


def nginx_size(size: int) -> str:
    """Bytes as nginx (and HAProxy) spell sizes: ``100m``, ``64k`` or a byte count."""
    for unit, suffix in ((GIB, "g"), (MIB, "m"), (KIB, "k")):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def fleet_size(size: int) -> str:
    """Bytes as fleet's options spell them (``100MiB``), so a command line reads like the docs."""
    for unit, suffix in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def seconds(value: float) -> str:
    """``60`` for whole seconds, else ``2.5``: what every server here parses as seconds."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def whole_seconds(value: float) -> int:
    """Seconds rounded up, for servers (Apache) that accept only integers; never 0."""
    whole = int(value)
    return max(1, whole if whole == value else whole + 1)


def host_names(entries: tuple[str, ...]) -> list[str]:
    """The host part of ``--allow-host`` entries (``HOST[:PORT]``), deduplicated in order."""
    names: list[str] = []
    for entry in entries:
        host = entry
        if entry.startswith("["):
            host = entry[: entry.index("]") + 1]
        elif entry.count(":") == 1:
            host = entry.split(":", 1)[0]
        if host and host not in names:
            names.append(host)
    return names


def _option_value_args(f: Any, value: Any) -> list[str]:
    meta = f.metadata
    flags = meta["flags"]
    long_flag = flags[-1]
    if meta["is_flag"]:
        if "/" in long_flag:
            on, off = long_flag.split("/")
            return [on if value else off]
        return [long_flag] if value else []
    if meta["multiple"]:
        return [arg for item in value for arg in (long_flag, str(item))]
    if f.name in {"max_body_size", "max_header_size", "max_memory", "max_memory_hard", "max_trailer_size",
                  "max_buffered_request"}:
        return [long_flag, fleet_size(value)]
    if isinstance(value, float):
        return [long_flag, seconds(value)]
    return [long_flag, str(value)]


# --domain in a generated deployment: the ACME state lives under this persistent directory
# (systemd's StateDirectory=fleet, a Docker volume, a Kubernetes PersistentVolumeClaim).
ACME_STATE_ROOT = "/var/lib/fleet"


def acme_state(config: Config) -> dict[str, Any]:
    """The ``fleet_arguments`` override that keeps the ACME state on the persistent directory."""
    if not config.domain:
        return {}
    return {"acme_state": config.acme_state or f"{ACME_STATE_ROOT}/acme"}


def fleet_arguments(config: Config, command: str = "up", **overrides: Any) -> list[str]:
    """The arguments of ``fleet COMMAND`` that reproduce ``config`` (with ``overrides`` applied).

    ``-n`` is always written, since its default (the CPU count) differs between machines; every
    other option only when it differs from its default, so the line stays readable.
    """
    config = replace(config, **overrides)
    args: list[str] = []
    args += config.apps()
    for f in option_fields():
        if command not in f.metadata["commands"] or f.metadata["secret"]:
            continue  # a secret travels in the environment (EnvironmentFile), never in a config
        value = getattr(config, f.name)
        if f.name == "workers":
            args += ["-n", str(value)]
            continue
        if value == _field_default(f):
            continue
        if f.name == "proxy_processes" and value == 0:
            args += ["--proxy-processes", "auto"]
            continue
        args += _option_value_args(f, value)
    if config.app_args:
        args += ["--args", *config.app_args]
    return args


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def fleet_command_line(config: Config, command: str = "up", executable: str = "fleet",
                       kind: str | None = None, **overrides: Any) -> str:
    """``fleet up APP -n 3 ...`` as one shell-quoted line, for comments and documentation."""
    words = [*shlex.split(executable), command, *([kind] if kind else [])]
    return shlex.join([*words, *fleet_arguments(config, command, **overrides)])


def comment_block(lines: list[str], prefix: str = "# ") -> str:
    """Lines turned into a comment block (empty lines become a bare ``#``). Each line is made
    one printable line first: a value with a newline must not end the comment."""
    return "\n".join((prefix + comment_line(line)).rstrip() for line in lines) + "\n"
