"""The Operations section of fleet's settings.

Running a fleet: its name and control socket (for ``fleet status``/``reload``/...), the
Prometheus metrics, and where ``fleet balance`` finds fleets on several hosts (DNS names, the
resolvers to ask, how often). Read as ``config.operations``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import CONTROL, PROXY, option
from fleet.rules import parse_resolver, parse_target, valid_fleet_name
from fleet.values import parse_bool, parse_duration, parse_port, parse_socket_path, parse_url_path

BALANCE = frozenset({"balance"})


def parse_fleet_name(value: str) -> str:
    return valid_fleet_name(str(value))


def parse_resolve(value: str) -> str:
    parse_target(str(value))
    return str(value).strip()


def parse_resolver_entry(value: str) -> str:
    parse_resolver(str(value))
    return str(value).strip()


@dataclass(frozen=True)
class OperationsSettings:
    """The Operations section (``config.operations``); frozen."""

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
    resolve: tuple[str, ...] = option(
        (), "--resolve", multiple=True, parse=parse_resolve, metavar="NAME:PORT", commands=BALANCE,
        help="Fleets on several hosts, found through DNS (repeatable): A/AAAA of NAME, or SRV of "
             "_service._proto.NAME, asked again on their TTL. Bokeh sessions go to the host in "
             "their id (fleet up --host-id); HOST:PORT given too are hosts as well.",
    )
    by_host: bool = option(
        False, "--hosts", is_flag=True, parse=parse_bool, commands=BALANCE,
        help="The HOST:PORT are fleets started with --host-id: route as with --resolve, without DNS.",
    )
    resolver: tuple[str, ...] = option(
        (), "--resolver", multiple=True, parse=parse_resolver_entry, metavar="ADDR[:PORT]",
        commands=BALANCE, show_default="the nameservers of /etc/resolv.conf",
        help="DNS server that --resolve asks (repeatable).",
    )
    dns_min_ttl: float = option(
        1.0, "--dns-min-ttl", parse=parse_duration, metavar="SECONDS", commands=BALANCE,
        help="Ask a --resolve name again no sooner than this, whatever its TTL.",
    )
    dns_max_ttl: float = option(
        30.0, "--dns-max-ttl", parse=parse_duration, metavar="SECONDS", commands=BALANCE,
        help="Ask a --resolve name again at least this often, whatever its TTL.",
    )


__all__ = ["OperationsSettings", "parse_fleet_name", "parse_resolve", "parse_resolver_entry"]
