"""A Dockerfile that runs ``fleet up`` and a compose file adding Prometheus, for ``deploy/docker``.

The image installs fleet from the repository (the build context is the repository root) and
runs it as an unprivileged user; compose gives it an init process and a stop grace period longer
than --graceful-timeout. Prometheus shares fleet's network namespace, so
``deploy/prometheus/prometheus.yml`` (target ``localhost:5006``) works unchanged. Pure
functions of Config and Deployment.
"""

from __future__ import annotations

import json
import re
import shlex

from fleet.config import Config
from fleet.configgen.common import ACME_STATE_ROOT, acme_state, comment_block, fleet_arguments, fleet_command_line, whole_seconds
from fleet.configgen.deployment import Deployment
from fleet.configgen.systemd import STOP_MARGIN_SECONDS
from fleet.configgen.quoting import dockerfile_list, dockerfile_word, visible

PYTHON_IMAGE = "python:3.11-slim"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
PROMETHEUS_PORT = 9090


def _app_source(config: Config) -> str | None:
    """The top-level path of APP to copy into the image (``examples`` for examples/x.py)."""
    if not config.app:
        return None
    if ":" in config.app and not config.app.endswith(".py"):
        return config.app.split(":", 1)[0].split(".", 1)[0]
    return config.app.strip("/").split("/", 1)[0]


def _ports(config: Config) -> list[int]:
    ports = [config.port]
    if config.metrics_port is not None and not config.no_metrics:
        ports.append(config.metrics_port)
    return ports


def render_dockerfile(config: Config, deployment: Deployment) -> str:
    """The Dockerfile text: fleet installed with Bokeh, running ``fleet up`` for ``config``."""
    workdir = deployment.working_directory
    source = _app_source(config)
    command = json.dumps(["fleet", "up", *fleet_arguments(config, "up", **acme_state(config))])
    health = json.dumps([
        "python", "-c", f"import socket; socket.create_connection(('127.0.0.1', {config.port}), 2)",
    ])
    header = comment_block([
        f"fleet in a container: `{fleet_command_line(config, 'up')}`.",
        "Build from the repository root (regenerate with `python -m fleet.configgen.refresh`):",
        "    docker build -f deploy/docker/Dockerfile -t fleet .",
        f"    docker run --init -p {config.port}:{config.port} fleet",
        "or, with Prometheus: docker compose -f deploy/docker/compose.yml up",
        "fleet must listen on 0.0.0.0 inside the container for the published port to reach it.",
    ])
    lines = [
        f"FROM {PYTHON_IMAGE}",
        "",
        "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"WORKDIR {dockerfile_word(workdir)}",
        "",
        "COPY pyproject.toml README.md ./",
        "COPY src ./src",
        "RUN pip install '.[bokeh,acme]'" if config.domain else "RUN pip install '.[bokeh]'",
    ]
    if source and source not in {"src", "."}:
        plain = re.fullmatch(r"[A-Za-z0-9_.@+-][A-Za-z0-9_./@+-]*", source)
        # Exec form (a JSON array) for a name Docker would split or expand.
        lines.append(f"COPY {source} ./{source}" if plain else f"COPY {dockerfile_list([source, './' + source])}")
    lines += [
        "",
        "# fleet status/down find the control socket by themselves: `docker exec CONTAINER fleet status`.",
        f"RUN useradd --system --no-create-home --home-dir {shlex.quote(visible(workdir))} fleet "
        f"&& chown fleet {shlex.quote(visible(workdir))}",
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

