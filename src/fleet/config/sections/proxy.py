"""The Proxy section of fleet's settings.

The front end: where the proxy listens, which data plane runs it (built-in, nginx, HAProxy or
none), in how many processes, and whether clients stick to a worker. Read by the front end
(``config.frontend``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import CONTROL, PROXY, option
from fleet.values import parse_bool, parse_host, parse_port, parse_socket_path


PROXY_KINDS = ("builtin", "nginx", "haproxy")


def parse_proxy_kind(value: str) -> str:
    kind = str(value).strip().lower()
    if kind not in PROXY_KINDS:
        raise ValueError(f"unknown data plane {value!r} (one of {', '.join(PROXY_KINDS)})")
    return kind


def parse_proxy_processes(value: str | int) -> int:
    """``N`` (1..64) or ``auto`` (stored as 0, resolved at start by ``fleet.cpulimit``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError(f"must be auto or 1..64: {value}")
    return number


@dataclass(frozen=True)
class ProxySettings:
    """The Proxy section (``config.frontend``); frozen."""

    port: int = option(
        5006, "--port", parse=parse_port, commands=CONTROL,
        help="Public port of the built-in proxy.",
    )
    address: str = option(
        "127.0.0.1", "--address", parse=parse_host, commands=PROXY, help="Address the proxy listens on.",
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
    sticky: bool = option(
        True, "--sticky/--no-sticky", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Pin a client to a worker with the fleet_affinity cookie.",
    )
    compress: bool = option(
        True, "--compress/--no-compress", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Compress worker responses of text types (HTML, JSON, JavaScript, CSS, SVG, XML; "
             "not text/event-stream) of 512 bytes or more for clients that accept it: zstd, "
             "brotli (with fleet[compress]) or gzip, by the client's Accept-Encoding, streamed "
             "as they are relayed. The built-in proxy only. Static files the proxy serves "
             "itself are compressed either way. See the README on BREACH.",
    )
    proxy_processes: int = option(
        1, "--proxy-processes", parse=parse_proxy_processes, metavar="N|auto", commands=PROXY,
        help="Proxy processes accepting on --port (SO_REUSEPORT), each supervised by the master; "
             "least-connections counts stay fleet-wide (shared memory). auto: one per 4 usable "
             "cores for `up` (the workers need the rest), one per usable core for `balance`, "
             "at most 16 (fleet.cpulimit.auto_proxy_processes).",
    )


__all__ = ["ProxySettings", "PROXY_KINDS", "parse_proxy_kind", "parse_proxy_processes"]
