"""The one place that reads which front the config asks for (``--no-proxy``, ``--proxy``)."""

from __future__ import annotations

from fleet.balancer.settings import ProxyViews
from fleet.config import Config
from fleet.front.builtin import BuiltinFront
from fleet.front.interface import Front
from fleet.front.noproxy import NoFront
from fleet.supervisor.process import Output


def front_for(config: Config, control_path: str, output: Output) -> Front:
    """The front ``fleet up`` runs with ``config``; not started. ``control_path``: the control
    socket, next to which a managed nginx/HAProxy keeps its files."""
    if config.no_proxy:
        return NoFront()
    if config.proxy == "builtin":
        return BuiltinFront(ProxyViews.of(config), output.fleet)
    from fleet.front.managed import ManagedFront  # imports fleet.dataplane only when used

    return ManagedFront(config, control_path, output)


__all__ = ["front_for"]
