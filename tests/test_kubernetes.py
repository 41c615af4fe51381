"""fleet config kubernetes: core objects validated offline against the Kubernetes schemas
(kubernetes-validate), the custom resources by structure; the YAML writer; -n from cpu.max."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.config import build_config
from fleet.configgen import render
from fleet.configgen.deployment import Deployment
from fleet.configgen.kubernetes import LIVE_PATH, READY_PATH, grace_seconds
from fleet.configgen.yamltext import dump
from fleet.cpulimit import available_cpus, cgroup_cpu_limit, cgroup_dirs, parse_cpu_max
from up_helpers import run_cli

TARGET = Deployment(fleet_executable="/usr/local/bin/fleet", working_directory="/srv/fleet")


def manifests(**options: Any) -> dict[str, dict[str, Any]]:
    config = build_config(options, {}, {}, command="config", app="app.py")
    docs = list(yaml.safe_load_all(render("kubernetes", config, TARGET)))
    return {doc["kind"]: doc for doc in docs if doc}


def test_core_objects_validate_against_the_kubernetes_schemas() -> None:
    objects = manifests(workers="3", graceful_timeout="40", name="shop")
    version = kubernetes_validate.latest_version()
    for kind in ("Deployment", "Service"):
        kubernetes_validate.validate(objects[kind], version, strict=True)
    assert set(objects) == {"Deployment", "Service", "HTTPRoute", "PodMonitor"}


def test_deployment_runs_fleet_up_with_probes_and_a_long_enough_grace() -> None:
    objects = manifests(workers="3", graceful_timeout="40", name="shop")
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["fleet", "up", "app.py"]
    assert "-n" not in container["command"]  # the pod's CPU limit decides, through cpu.max
    assert container["resources"]["limits"]["cpu"] == "3"
    address = container["command"].index("--address")
    assert container["command"][address + 1] == "0.0.0.0"
    assert "--name" not in container["command"]
    assert pod["terminationGracePeriodSeconds"] == grace_seconds(build_config(
        {"graceful_timeout": "40"}, {}, {}, command="config", app="app.py")) >= 40 + 5
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE_PATH, "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 5006, "protocol": "TCP"}]
    assert objects["Deployment"]["metadata"]["name"] == "fleet-shop"


def test_route_keeps_a_browser_on_one_pod_and_points_at_the_service() -> None:
    objects = manifests(allow_host=("app.example.com", "*.example.org"))
    route = objects["HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    rule = route["spec"]["rules"][0]
    assert rule["sessionPersistence"]["type"] == "Cookie" and rule["sessionPersistence"]["sessionName"]
    service = objects["Service"]
    assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}]
    assert route["spec"]["hostnames"] == ["app.example.com", "*.example.org"]
    assert isinstance(route["spec"]["parentRefs"][0]["name"], str)


def test_pod_monitor_selects_the_pods_and_scrapes_the_metrics_path() -> None:
    objects = manifests(metrics_path="/stats")
    monitor = objects["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"] == pod_labels
    assert objects["Service"]["spec"]["selector"] == pod_labels
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert endpoint["path"] == "/stats" and endpoint["port"] in {p["name"] for p in container["ports"]}
    assert "PodMonitor" not in manifests(no_metrics=True)


def test_fleet_config_kubernetes_command(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    result = run_cli("config", "kubernetes", "app.py", "-n", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out.read_text()) if doc]
    assert kinds == ["Deployment", "Service", "HTTPRoute", "PodMonitor"]


_text = st.text(alphabet=string.printable + "é✓", max_size=20)
_values = st.recursive(
    st.one_of(_text, st.integers(-10**6, 10**6), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, _values, min_size=1, max_size=5))
def test_yaml_writer_round_trips_through_pyyaml(value: dict[str, Any]) -> None:
    assert yaml.safe_load(dump(value)) == value


def test_yaml_writer_quotes_what_yaml_would_misread() -> None:
    assert yaml.safe_load(dump({"a": ["yes", "no", "on", "1", "0.5", "null", "", " x", "a: b", "#c", "-"]})) == {
        "a": ["yes", "no", "on", "1", "0.5", "null", "", " x", "a: b", "#c", "-"]}


def test_cpu_max_parsing_and_the_worker_default() -> None:
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("max 100000") is None and parse_cpu_max("") is None and parse_cpu_max("x y") is None
    assert available_cpus(64, 64, 1.5) == 2 and available_cpus(64, 8, None) == 8
    assert available_cpus(4, None, 0.2) == 1 and available_cpus(None, None, None) == 1
    assert cgroup_dirs("0::/kubepods/pod1/c2\n", "/cg") == ["/cg/kubepods/pod1/c2", "/cg/kubepods/pod1",
                                                             "/cg/kubepods", "/cg"]
    assert cgroup_dirs("0::/\n", "/cg") == ["/cg"] and cgroup_dirs("", "/cg") == ["/cg"]


def test_cgroup_cpu_limit_reads_cpu_max(tmp_path: Path) -> None:
    own = Path("/proc/self/cgroup").read_text()
    directory = cgroup_dirs(own, str(tmp_path))[0]
    Path(directory).mkdir(parents=True, exist_ok=True)
    Path(directory, "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 3.0
    Path(directory, "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) is None


def test_health_answers() -> None:
    from fleet.health import live, ready
    from fleet.supervisor.info import WorkerInfo

    def info(state: str) -> WorkerInfo:
        return WorkerInfo(index=0, id="w0", port=1, pid=None, state=state, started_at=None, restarts=0,
                          crash_looping=False, last_exit=None)

    assert live()[0] == 200
    status, kind, body = ready([info("ready"), info("backoff")], 2)
    assert (status, kind) == (200, "application/json")
    assert yaml.safe_load(body) == {"status": "ready", "ready": 1, "workers": 2, "desired": 2}
    assert ready([info("backoff")], 1)[0] == 503 and ready([], 1)[0] == 503
