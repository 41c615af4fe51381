"""``fleet config kubernetes``: manifests for apps that outgrow one machine.

Each app pod runs ``fleet up`` (workers plus fleet's proxy, so least-connections, WebSocket
relay and per-worker affinity work inside the pod as on one machine) with ``--host-id`` set to
its pod name (downward API), so its Bokeh session ids and affinity cookie name the pod. In
front, ``fleet balance`` runs as its own Deployment (``kubernetes_front``): it finds the ready
pods through a headless Service and sends each session to its pod, by the session id (no cookie
needed, as in a cross-site embed) or the cookie, new ones by least connections.

Objects: the app Deployment (probes on ``/_fleet/health/ready`` and ``/_fleet/health/live``,
a preStop that drains and a ``terminationGracePeriodSeconds`` that covers it, ``-n`` left to
the pod's CPU limit, which fleet reads from ``cpu.max``), the headless Service of the app pods,
the front Deployment and its Service, an ``HTTPRoute`` to the front, and a PodMonitor for the
Prometheus operator. The app is in the image at ``APP_ROOT`` (``docker.py`` copies it there):
no path of the machine that generated the manifests appears in them. Pure functions of Config
and Deployment; ``fleet.configgen.yamltext`` writes YAML.
"""

from __future__ import annotations

from typing import Any

import os

from fleet.config import Config
from fleet.configgen.common import ACME_STATE_ROOT, acme_state, comment_block, fleet_arguments, whole_seconds
from fleet.configgen.deployment import Deployment
from fleet.configgen.kubernetes_front import (
    FRONT_PORT, app_grace_seconds, drain_command, front_deployment, front_service, headless_service,
    hosts_service_name, name_of,
)
from fleet.configgen.yamltext import dump
from fleet.health import LIVE_PATH, READY_PATH

IMAGE = "fleet:latest"
REPLICAS = 2
SERVICE_PORT = 80
# Where the image holds the apps (deploy/docker/Dockerfile copies each there by its base name).
APP_ROOT = "/srv/app"
_name = name_of


def image_path(app: str) -> str:
    """Where APP is inside the image: ``APP_ROOT/<base name>`` for a file or directory; a
    module (``pkg.mod:app``) stays as written, imported from ``APP_ROOT``."""
    if ":" in app and not app.endswith((".py", ".ipynb")) and "/" not in app:
        return app
    return f"{APP_ROOT}/{os.path.basename(os.path.normpath(app))}"


def _labels(config: Config) -> dict[str, str]:
    return {"app.kubernetes.io/name": "fleet", "app.kubernetes.io/instance": _name(config)}


def pod_command(config: Config) -> list[str]:
    """``fleet up ...`` for a pod: the apps where the image has them, on all addresses, named
    by the pod (``$(POD_NAME)``, set from the downward API), without ``-n`` (the CPU limit
    decides)."""
    apps = {"app": image_path(config.app) if config.app else None,
            "extra_apps": tuple(image_path(app) for app in config.extra_apps)}
    args = fleet_arguments(config, "up", address="0.0.0.0", name=None, control_socket=None, host_id=None,
                           **apps, **acme_state(config))
    index = args.index("-n")
    del args[index:index + 2]
    if config.proxy != "builtin" or config.no_proxy:  # --host-id needs the built-in proxy
        return ["fleet", "up", *args]
    return ["fleet", "up", *args, "--host-id", "$(POD_NAME)"]


def grace_seconds(config: Config) -> int:
    """Pod termination grace: the preStop's drain, then fleet's graceful stop and its margin."""
    return app_grace_seconds(config)


def deployment(config: Config, target: Deployment) -> dict[str, Any]:
    labels = _labels(config)
    container: dict[str, Any] = {
        "name": "fleet",
        "image": IMAGE,
        "command": pod_command(config),
        "workingDir": APP_ROOT,
        "ports": [{"name": "http", "containerPort": config.port, "protocol": "TCP"}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"},
                # The pod's name is its --host-id: in its session ids and affinity cookie.
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        # BOKEH_SECRET_KEY, FLEET_SSL_PASSWORD, ...: kubectl create secret generic <name>-secrets
        "envFrom": [{"secretRef": {"name": f"{_name(config)}-secrets", "optional": True}}],
        "resources": {
            "requests": {"cpu": str(config.workers), "memory": f"{256 * config.workers}Mi"},
            "limits": {"cpu": str(config.workers)},
        },
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": "http"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE_PATH, "port": "http"},
            "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": READY_PATH, "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": max(1, whole_seconds(config.start_timeout) // 2 + 5),
        },
        "lifecycle": {"preStop": {"exec": {"command": drain_command(config)}}},
        "securityContext": {
            "runAsNonRoot": True, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        },
        # fleet's control socket (/tmp/fleet-<uid>/) and the apps' temporary files.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": _name(config), "labels": labels},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": grace_seconds(config),
                    "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def with_acme_state(config: Config, deployment: dict[str, Any]) -> dict[str, Any]:
    """--domain: the ACME state on a PersistentVolumeClaim shared by the pods (file locks keep
    their orders apart). fleet makes ``acme/`` below the mount 0700 itself; OnRootMismatch keeps
    the kubelet from giving the group access to its files at each mount (fleet refuses that)."""
    if not config.domain:
        return deployment
    pod = deployment["spec"]["template"]["spec"]
    pod["securityContext"]["fsGroupChangePolicy"] = "OnRootMismatch"
    pod["volumes"].append({"name": "acme-state", "persistentVolumeClaim": {"claimName": f"{_name(config)}-acme"}})
    pod["containers"][0]["volumeMounts"].append({"name": "acme-state", "mountPath": ACME_STATE_ROOT})
    return deployment


def acme_claim(config: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{_name(config)}-acme", "labels": _labels(config)},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "16Mi"}}},
    }


def http_route(config: Config) -> dict[str, Any]:
    # Gateway API hostnames: a name, or a leading "*." wildcard; fleet's bare "*" means any (none).
    names = dict.fromkeys(host.split(":", 1)[0] for host in config.allow_host)
    hosts = [name for name in names if name != "*" and "*" not in name[1:]]
    spec: dict[str, Any] = {
        "parentRefs": [{"name": "fleet-gateway"}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            # The front tier keeps each Bokeh session on its pod: no gateway affinity needed.
            "backendRefs": [{"name": _name(config), "port": SERVICE_PORT}],
        }],
    }
    if hosts:
        spec["hostnames"] = hosts
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": _name(config), "labels": _labels(config)},
        "spec": spec,
    }


def pod_monitor(config: Config) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"port": "http", "path": config.metrics_path, "interval": "15s"}
    if config.metrics_port is not None:
        endpoint = {"targetPort": config.metrics_port, "path": config.metrics_path, "interval": "15s"}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": _name(config), "labels": _labels(config)},
        "spec": {"selector": {"matchLabels": _labels(config)}, "podMetricsEndpoints": [endpoint]},
    }


def objects(config: Config, target: Deployment) -> list[dict[str, Any]]:
    items = [with_acme_state(config, deployment(config, target)), headless_service(config, _labels(config)),
             front_deployment(config, IMAGE), front_service(config, SERVICE_PORT), http_route(config)]
    if config.domain:
        items.append(acme_claim(config))
    if not config.no_metrics:
        items.append(pod_monitor(config))
    return items


def render(config: Config, target: Deployment) -> str:
    header = comment_block([
        f"fleet on Kubernetes: {REPLICAS} app pods, each running `fleet up` (workers + fleet's proxy)",
        f"with --host-id set to its pod name, and `fleet balance` in front ({_name(config)}-front).",
        "Generated by: fleet config kubernetes (regenerate deploy/ with python -m fleet.configgen.refresh)",
        "",
        f"Image: {IMAGE}, built from deploy/docker/Dockerfile (docker build -f deploy/docker/Dockerfile -t fleet .);",
        f"the app is in it under {APP_ROOT}/. -n comes from the pod's CPU limit (cpu.max).",
        f"Secrets: kubectl create secret generic {_name(config)}-secrets --from-literal=BOKEH_SECRET_KEY=...",
        "",
        f"Sessions: the front finds the ready app pods through the headless Service {hosts_service_name(config)}",
        "and sends each Bokeh session to the pod named in its id (no cookie needed), fleet's",
        "fleet_affinity cookie to its pod, new sessions by least connections. Port "
        f"{FRONT_PORT} on the front pods; the HTTPRoute",
        "(a Gateway named fleet-gateway) or any Service of type LoadBalancer can point at it.",
        "Replacing a pod: it leaves the endpoints, the fronts stop giving it new sessions, its",
        "preStop waits until its open WebSockets end (or --drain-timeout), then fleet stops.",
        "Bokeh's WebSocket token travels in a request header: give the gateway's listener",
        f"request-header buffers of at least --max-header-size (here {config.max_header_size // 1024} KiB).",
        "Bokeh apps: pass the public host (--allow-websocket-origin example.com).",
        "Probes: /_fleet/health/ready and /live on fleet's port (they follow --metrics-allow, whose",
        "default admits the private networks kubelets, fronts and Prometheus come from).",
        "PodMonitor: for the Prometheus operator; drop it without one.",
    ])
    return header + "".join("---\n" + dump(item) for item in objects(config, target))


__all__ = ["APP_ROOT", "image_path", "objects", "pod_command", "grace_seconds", "render"]
