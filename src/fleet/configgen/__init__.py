"""``fleet config KIND``: configurations for other software, equivalent to fleet's own topology.

``render(kind, config)`` returns the text of a complete nginx.conf, Apache httpd.conf, HAProxy
configuration, systemd unit or Kubernetes manifests (and, for ``deploy/docker``, a Dockerfile and compose file). Each
renderer is a pure function of the ``Config`` and a ``Deployment`` (paths on the target
machine); only ``deployment.detect`` looks at this machine, and only when no Deployment is given.
"""

from __future__ import annotations

from typing import Callable

from fleet.config import Config
from fleet.configgen import apache, docker, haproxy, kubernetes, nginx, systemd
from fleet.configgen.deployment import Deployment, detect

Renderer = Callable[[Config, Deployment], str]

RENDERERS: dict[str, Renderer] = {
    "nginx": nginx.render,
    "apache": apache.render,
    "haproxy": haproxy.render,
    "systemd": systemd.render,
    "dockerfile": docker.render_dockerfile,
    "compose": docker.render_compose,
    "kubernetes": kubernetes.render,
}


def render(kind: str, config: Config, deployment: Deployment | None = None) -> str:
    """The configuration of ``kind`` for ``config``; ``deployment`` defaults to this machine's."""
    try:
        renderer = RENDERERS[kind]
    except KeyError:
        raise ValueError(f"unknown configuration kind {kind!r} (one of {', '.join(RENDERERS)})") from None
    return renderer(config, deployment if deployment is not None else detect(config))


__all__ = ["Deployment", "RENDERERS", "detect", "render"]
