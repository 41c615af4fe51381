"""The Operations section of fleet's settings.

Running a fleet: its name and control socket (for ``fleet status``/``reload``/...), and the
Prometheus metrics. Read as ``config.operations``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import CONTROL, PROXY, option
from fleet.rules import valid_fleet_name
from fleet.values import parse_bool, parse_port, parse_socket_path, parse_url_path


def parse_fleet_name(value: str) -> str:
    return valid_fleet_name(str(value))


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


__all__ = ["OperationsSettings", "parse_fleet_name"]
