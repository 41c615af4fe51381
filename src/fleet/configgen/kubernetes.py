"""``fleet config kubernetes``: manifests for apps that outgrow one machine.

Each pod runs ``fleet up`` (workers plus fleet's proxy, so least-connections, WebSocket relay
and per-worker affinity work inside the pod as on one machine). Past one pod, something at the
edge must keep a browser on one pod, because a Bokeh session lives in one worker of one pod:
the Gateway API ``HTTPRoute`` below asks the gateway for cookie session persistence
(``sessionPersistence``, Gateway API experimental channel: Envoy Gateway, Istio, NGINX Gateway
Fabric, ...). fleet's own ``fleet_affinity`` cookie then picks the worker inside the pod.

Objects: a Deployment (probes on ``/_fleet/health/ready`` and ``/_fleet/health/live``,
``terminationGracePeriodSeconds`` past the drain, ``-n`` left to the pod's CPU limit, which
fleet reads from ``cpu.max``), a Service, the HTTPRoute and a PodMonitor for the Prometheus
operator. Pure functions of Config and Deployment; ``fleet.configgen.yamltext`` writes YAML.
"""

from __future__ import annotations

from typing import Any

from fleet.config import Config
from fleet.configgen.common import ACME_STATE_ROOT, acme_state, comment_block, fleet_arguments, whole_seconds
from fleet.configgen.deployment import Deployment
from fleet.configgen.systemd import STOP_MARGIN_SECONDS
from fleet.configgen.yamltext import dump
from fleet.health import LIVE_PATH, READY_PATH

IMAGE = "fleet:latest"
REPLICAS = 2
SERVICE_PORT = 80
# Seconds between Kubernetes taking a pod out of the Service's endpoints and the pod's SIGTERM
# being safe: endpoint updates reach gateways asynchronously (the usual preStop sleep).
ENDPOINT_LAG = 5
SESSION_COOKIE = "fleet_pod"


def _name(config: Config) -> str:
    return f"fleet-{config.name}" if config.name else "fleet"


def _labels(config: Config) -> dict[str, str]:
    return {"app.kubernetes.io/name": "fleet", "app.kubernetes.io/instance": _name(config)}


def pod_command(config: Config) -> list[str]:
    """``fleet up ...`` for a pod: on all addresses, without ``-n`` (the CPU limit decides)."""
    args = fleet_arguments(config, "up", address="0.0.0.0", name=None, control_socket=None, **acme_state(config))
    index = args.index("-n")
    del args[index:index + 2]
    return ["fleet", "up", *args]


def grace_seconds(config: Config) -> int:
    """Pod termination grace: endpoint lag, then fleet's drain, then its own TERM/KILL margin."""
    return ENDPOINT_LAG + whole_seconds(config.graceful_timeout) + STOP_MARGIN_SECONDS


def deployment(config: Config, target: Deployment) -> dict[str, Any]:
    labels = _labels(config)
    container: dict[str, Any] = {
        "name": "fleet",
        "image": IMAGE,
        "command": pod_command(config),
        "workingDir": target.working_directory,
        "ports": [{"name": "http", "containerPort": config.port, "protocol": "TCP"}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
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
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_LAG)]}}},
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


def service(config: Config) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": _name(config), "labels": _labels(config)},
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(config),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def http_route(config: Config) -> dict[str, Any]:
    # Gateway API hostnames: a name, or a leading "*." wildcard; fleet's bare "*" means any (none).
    names = dict.fromkeys(host.split(":", 1)[0] for host in config.allow_host)
    hosts = [name for name in names if name != "*" and "*" not in name[1:]]
    spec: dict[str, Any] = {
        "parentRefs": [{"name": "fleet-gateway"}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": _name(config), "port": SERVICE_PORT}],
            # A browser keeps its pod: its Bokeh session (and WebSocket) live there.
            "sessionPersistence": {
                "sessionName": SESSION_COOKIE,
                "type": "Cookie",
                "cookieConfig": {"lifetimeType": "Session"},
            },
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
    items = [with_acme_state(config, deployment(config, target)), service(config), http_route(config)]
    if config.domain:
        items.append(acme_claim(config))
    if not config.no_metrics:
        items.append(pod_monitor(config))
    return items


def render(config: Config, target: Deployment) -> str:
    header = comment_block([
        f"fleet on Kubernetes: {REPLICAS} pods, each running `fleet up` (workers + fleet's proxy).",
        "Generated by: fleet config kubernetes (regenerate deploy/ with python -m fleet.configgen.refresh)",
        "",
        f"Image: {IMAGE}, built from deploy/docker/Dockerfile (docker build -f deploy/docker/Dockerfile -t fleet .).",
        "-n comes from the pod's CPU limit (cpu.max), set by resources.limits.cpu below.",
        f"Secrets: kubectl create secret generic {_name(config)}-secrets --from-literal=BOKEH_SECRET_KEY=...",
        "",
        f"Sessions: the HTTPRoute's cookie ({SESSION_COOKIE}) keeps a browser on one pod; fleet's",
        "fleet_affinity cookie keeps it on one worker there. Needs a Gateway API implementation",
        "with sessionPersistence (experimental channel) and a Gateway named fleet-gateway.",
        "Bokeh's WebSocket token travels in a request header: give the gateway's listener",
        f"request-header buffers of at least --max-header-size (here {config.max_header_size // 1024} KiB).",
        "Bokeh apps: pass the public host (--allow-websocket-origin example.com).",
        "Probes: /_fleet/health/ready and /live on fleet's port (they follow --metrics-allow, whose",
        "default admits the private networks kubelets and Prometheus come from).",
        "PodMonitor: for the Prometheus operator; drop it without one.",
    ])
    return header + "".join("---\n" + dump(item) for item in objects(config, target))


__all__ = ["objects", "pod_command", "grace_seconds", "render"]
