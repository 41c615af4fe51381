"""A Dockerfile that runs ``fleet up`` and a compose file adding Prometheus, for ``deploy/docker``.

The image is built in two stages from the repository (the build context is the repository
root): the first has a C compiler and builds fleet's wheel with its compiled hot path
(``fleet.balancer._speedups``) and the wheels of its dependencies; the second installs those
wheels into a slim image, fails the build if the compiled module does not import (fleet would
otherwise run its pure-Python path without a word), and copies each app to ``APP_ROOT/<base
name>``, the fixed path the Kubernetes manifests name. It runs as an unprivileged user;
compose gives it an init process and a stop grace period longer than --graceful-timeout.
Prometheus shares fleet's network namespace, so ``deploy/prometheus/prometheus.yml`` (target
``localhost:5006``) works unchanged. Pure functions of Config and Deployment.
"""

from __future__ import annotations

import json
import os
import re
import shlex

from fleet.config import Config
from fleet.configgen.common import ACME_STATE_ROOT, acme_state, comment_block, fleet_arguments, fleet_command_line, whole_seconds
from fleet.configgen.deployment import Deployment
from fleet.configgen.kubernetes import APP_ROOT, image_path
from fleet.configgen.systemd import STOP_MARGIN_SECONDS
from fleet.configgen.quoting import dockerfile_list, dockerfile_word, visible

PYTHON_IMAGE = "python:3.11-slim"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
PROMETHEUS_PORT = 9090


def app_sources(config: Config) -> list[tuple[str, str]]:
    """(path in the build context, path in the image) of each APP given as a file or directory;
    a module (``pkg.mod:app``) copies its top-level package. A path outside the context (an
    absolute one) is taken by its base name: build with its parent directory in the context."""
    copies = []
    for app in config.apps():
        if ":" in app and not app.endswith((".py", ".ipynb")) and "/" not in app:
            package = app.split(":", 1)[0].split(".", 1)[0]
            copies.append((package, f"{APP_ROOT}/{package}"))
            continue
        source = os.path.normpath(app)
        if os.path.isabs(source) or source.startswith(".."):
            source = os.path.basename(source)
        copies.append((source, image_path(app)))
    return copies


def _ports(config: Config) -> list[int]:
    ports = [config.port]
    if config.metrics_port is not None and not config.no_metrics:
        ports.append(config.metrics_port)
    return ports


def render_dockerfile(config: Config, deployment: Deployment) -> str:
    """The Dockerfile text: fleet with its compiled hot path and Bokeh, running ``fleet up``."""
    workdir = deployment.working_directory
    apps = {"app": image_path(config.app) if config.app else None,
            "extra_apps": tuple(image_path(app) for app in config.extra_apps)}
    command = json.dumps(["fleet", "up", *fleet_arguments(config, "up", **apps, **acme_state(config))])
    health = json.dumps([
        "python", "-c", f"import socket; socket.create_connection(('127.0.0.1', {config.port}), 2)",
    ])
    header = comment_block([
        f"fleet in a container: `{fleet_command_line(config, 'up', **apps, **acme_state(config))}`.",
        "Build from the repository root (regenerate with `python -m fleet.configgen.refresh`):",
        "    docker build -f deploy/docker/Dockerfile -t fleet .",
        f"    docker run --init -p {config.port}:{config.port} fleet",
        "or, with Prometheus: docker compose -f deploy/docker/compose.yml up",
        "fleet must listen on 0.0.0.0 inside the container for the published port to reach it.",
        f"The apps are copied to {APP_ROOT}/ (the path the Kubernetes manifests name).",
    ])
    lines = [
        "# Stage 1: fleet's wheel with its compiled hot path, and its dependencies' wheels.",
        f"FROM {PYTHON_IMAGE} AS build",
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
        "&& rm -rf /var/lib/apt/lists/*",
        "WORKDIR /build",
        "COPY pyproject.toml setup.py README.md ./",
        "COPY src ./src",
        "RUN pip wheel --wheel-dir /wheels '.[bokeh,acme]'" if config.domain
        else "RUN pip wheel --wheel-dir /wheels '.[bokeh]'",
        "",
        "# Stage 2: the runtime, without a compiler.",
        f"FROM {PYTHON_IMAGE}",
        "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        "COPY --from=build /wheels /wheels",
        "RUN pip install --no-index --find-links=/wheels 'fleet[bokeh,acme]' && rm -rf /wheels" if config.domain
        else "RUN pip install --no-index --find-links=/wheels 'fleet[bokeh]' && rm -rf /wheels",
        "# Fail the build, not the first request, if the compiled hot path did not build.",
        "RUN python -c \"import fleet.balancer._speedups\"",
        "",
    ]
    for source, target in app_sources(config):
        plain = re.fullmatch(r"[A-Za-z0-9_.@+-][A-Za-z0-9_./@+-]*", source + target)
        # Exec form (a JSON array) for a name Docker would split or expand.
        lines.append(f"COPY {source} {target}" if plain else f"COPY {dockerfile_list([source, target])}")
    lines += [
        f"WORKDIR {dockerfile_word(workdir)}",
        "",
        "# fleet status/down find the control socket by themselves: `docker exec CONTAINER fleet status`.",
        f"RUN useradd --system --no-create-home --home-dir {shlex.quote(visible(workdir))} fleet "
        f"&& mkdir -p {shlex.quote(visible(workdir))} && chown fleet {shlex.quote(visible(workdir))}",
        *([f"# --domain: the ACME state (account, certificates) on a volume, so a new container reuses it.",
           f"RUN mkdir -p {ACME_STATE_ROOT} && chown fleet {ACME_STATE_ROOT} && chmod 0700 {ACME_STATE_ROOT}",
           f"VOLUME {ACME_STATE_ROOT}"] if config.domain else []),
        "USER fleet",
        "",
        f"EXPOSE {' '.join(str(port) for port in _ports(config))}",
        "# fleet drains in-flight requests on SIGTERM; give it --graceful-timeout (see compose.yml).",
        "STOPSIGNAL SIGTERM",
        f"HEALTHCHECK --interval=10s --timeout=3s CMD {health}",
        f"CMD {command}",
    ]
    return header + "\n" + "\n".join(lines) + "\n"


def render_compose(config: Config, deployment: Deployment) -> str:
    """The compose.yml text: fleet (built from the Dockerfile) plus Prometheus scraping it."""
    ports = [*_ports(config), PROMETHEUS_PORT]
    grace = whole_seconds(config.graceful_timeout) + STOP_MARGIN_SECONDS
    header = comment_block([
        "fleet and Prometheus: docker compose -f deploy/docker/compose.yml up --build",
        f"App at http://localhost:{config.port}/, Prometheus at http://localhost:{PROMETHEUS_PORT}/.",
        "Regenerate with `python -m fleet.configgen.refresh`.",
    ])
    lines = [
        "services:",
        "  fleet:",
        "    build:",
        "      context: ../..",
        "      dockerfile: deploy/docker/Dockerfile",
        "    # An init process reaps whatever a worker's children leave behind.",
        "    init: true",
        "    ports:",
        *(f'      - "{port}:{port}"' for port in ports),
        f"    stop_grace_period: {grace}s",
        "    restart: unless-stopped",
        *([f"    volumes:", f"      - acme-state:{ACME_STATE_ROOT}"] if config.domain else []),
        "",
        "  prometheus:",
        f"    image: {PROMETHEUS_IMAGE}",
        "    # Shares fleet's network namespace: prometheus.yml scrapes localhost:"
        f"{config.metrics_port or config.port}, and port {PROMETHEUS_PORT} is published above.",
        '    network_mode: "service:fleet"',
        "    volumes:",
        "      - ../prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "      - ../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
        "    depends_on:",
        "      - fleet",
        "    restart: unless-stopped",
        *(["", "volumes:", "  acme-state: {}"] if config.domain else []),
    ]
    return header + "\n" + "\n".join(lines) + "\n"

