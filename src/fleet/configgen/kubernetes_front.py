"""The front tier of ``fleet config kubernetes``: ``fleet balance`` as its own Deployment, in
front of a headless Service of the app pods (pure functions of Config).

The headless Service lists the ready app pods in DNS (one A record each); the front resolves it
on its TTL (``--resolve``, bounded by ``--dns-max-ttl``) and polls each pod's
``/_fleet/health/ready``, so a Bokeh session goes to the pod whose id is in the session id
(``--host-id`` is the pod name) without any cookie, and a terminating pod, gone from the
endpoints, stops getting new sessions while its own keep going. The app pods' drain wait
(``drain_command``) is what keeps them going until they end or ``--drain-timeout`` passes.
"""

from __future__ import annotations

from typing import Any

from fleet.config import Config
from fleet.configgen.common import whole_seconds
from fleet.configgen.systemd import STOP_MARGIN_SECONDS

FRONT_PORT = 8080
FRONT_REPLICAS = 2
# How stale the front's view of the pods may be: CoreDNS answers headless names with a TTL of
# 5 s by default; the front asks again at least this often whatever the TTL says.
FRONT_MAX_TTL = 10
# Seconds between a pod leaving the endpoints and every gateway/front having noticed.
ENDPOINT_LAG = 5
DRAIN_POLL = 2  # seconds between two looks at a draining pod's open WebSockets

# preStop of an app pod: wait until the fronts have stopped sending it new sessions, then until
# its open WebSockets (Bokeh sessions) have ended or the drain time is up; SIGTERM follows.
_DRAIN_WAIT = """import sys, time, urllib.request
low, high, url = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
start = time.monotonic()
time.sleep(low)
while time.monotonic() - start < high:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        break
    open_sockets = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("fleet_websocket_connections{"))
    if open_sockets == 0:
        break
    time.sleep(%d)
""" % DRAIN_POLL


def name_of(config: Config) -> str:
    return f"fleet-{config.name}" if config.name else "fleet"


def hosts_service_name(config: Config) -> str:
    return f"{name_of(config)}-hosts"


def front_name(config: Config) -> str:
    return f"{name_of(config)}-front"


def notice_seconds() -> int:
    """From a pod's termination until no front sends it a new session."""
    return ENDPOINT_LAG + FRONT_MAX_TTL


def drain_seconds(config: Config) -> int:
    """How long an app pod's preStop may wait for its sessions: --drain-timeout (0: none)."""
    return 0 if config.drain_timeout <= 0 else whole_seconds(config.drain_timeout)


def drain_command(config: Config) -> list[str]:
    """preStop of an app pod (see ``_DRAIN_WAIT``); a plain wait without metrics to read."""
    low = notice_seconds()
    if config.no_metrics:
        return ["sleep", str(low)]
    port = config.metrics_port or config.port
    url = f"http://127.0.0.1:{port}{config.metrics_path}"
    return ["python", "-c", _DRAIN_WAIT, str(low), str(low + drain_seconds(config)), url]


def app_grace_seconds(config: Config) -> int:
    """The app pod's termination grace: the preStop's longest wait, then fleet's graceful stop
    and its own TERM/KILL margin, so Kubernetes never SIGKILLs a pod that is still on time."""
    return notice_seconds() + drain_seconds(config) + whole_seconds(config.graceful_timeout) + STOP_MARGIN_SECONDS


def front_grace_seconds(config: Config) -> int:
    return ENDPOINT_LAG + whole_seconds(config.graceful_timeout) + STOP_MARGIN_SECONDS


def headless_service(config: Config, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": hosts_service_name(config), "labels": labels},
        "spec": {
            "clusterIP": "None",  # headless: DNS answers with the ready pods' own addresses
            "selector": labels,
            "ports": [{"name": "http", "port": config.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def front_command(config: Config) -> list[str]:
    hosts = f"{hosts_service_name(config)}.$(POD_NAMESPACE).svc.cluster.local:{config.port}"
    command = ["fleet", "balance", "--resolve", hosts, "--address", "0.0.0.0", "--port", str(FRONT_PORT),
               "--dns-max-ttl", str(FRONT_MAX_TTL)]
    for origin in config.allow_websocket_origin:
        command += ["--allow-websocket-origin", origin]
    for host in config.allow_host:
        command += ["--allow-host", host]
    if config.graceful_timeout != 30.0:
        command += ["--graceful-timeout", f"{config.graceful_timeout:g}"]
    return command


def front_labels(config: Config) -> dict[str, str]:
    return {"app.kubernetes.io/name": "fleet-front", "app.kubernetes.io/instance": front_name(config)}


def front_deployment(config: Config, image: str) -> dict[str, Any]:
    labels = front_labels(config)
    container: dict[str, Any] = {
        "name": "fleet-front",
        "image": image,
        "command": front_command(config),
        "ports": [{"name": "http", "containerPort": FRONT_PORT, "protocol": "TCP"}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1"}},
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 6},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_LAG)]}}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": front_name(config), "labels": labels},
        "spec": {
            "replicas": FRONT_REPLICAS,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": front_grace_seconds(config),
                    "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
                    "containers": [container],
                },
            },
        },
    }


def front_service(config: Config, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name_of(config), "labels": front_labels(config)},
        "spec": {
            "type": "ClusterIP",
            "selector": front_labels(config),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


__all__ = ["FRONT_MAX_TTL", "FRONT_PORT", "app_grace_seconds", "drain_command", "front_command",
           "front_deployment", "front_grace_seconds", "front_service", "headless_service",
           "hosts_service_name", "name_of"]
