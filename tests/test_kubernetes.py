"""fleet config kubernetes: core objects validated offline against the Kubernetes schemas
(kubernetes-validate), the custom resources by structure; the YAML writer; -n from cpu.max."""

from __future__ import annotations

import os
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
from fleet.configgen.kubernetes import APP_ROOT, LIVE_PATH, READY_PATH, grace_seconds
from fleet.configgen.yamltext import dump
from fleet.cpulimit import available_cpus, cgroup_cpu_limit, cgroup_dirs, parse_cpu_max
from up_helpers import run_cli

TARGET = Deployment(fleet_executable="/usr/local/bin/fleet", working_directory="/srv/fleet")


def documents(**options: Any) -> list[dict[str, Any]]:
    config = build_config(options, {}, {}, command="config", app="app.py")
    return [doc for doc in yaml.safe_load_all(render("kubernetes", config, TARGET)) if doc]


def manifests(**options: Any) -> dict[str, dict[str, Any]]:
    """The app's objects by kind (the front tier's Deployment and Service: ``front``)."""
    return {doc["kind"]: doc for doc in documents(**options)
            if doc["metadata"]["labels"]["app.kubernetes.io/name"] == "fleet"
            and not doc["metadata"]["name"].endswith("-hosts")}


def front(**options: Any) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents(**options)
            if doc["metadata"]["labels"]["app.kubernetes.io/name"] == "fleet-front"}


def test_core_objects_validate_against_the_kubernetes_schemas() -> None:
    docs = documents(workers="3", graceful_timeout="40", name="shop")
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["kind"] in ("Deployment", "Service"):
            kubernetes_validate.validate(doc, version, strict=True)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == ["Deployment", "Deployment", "HTTPRoute", "PodMonitor", "Service", "Service"]


def test_deployment_runs_fleet_up_with_probes_and_a_long_enough_grace() -> None:
    objects = manifests(workers="3", graceful_timeout="40", drain_timeout="120", name="shop")
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["fleet", "up", f"{APP_ROOT}/app.py"]
    assert "-n" not in container["command"]  # the pod's CPU limit decides, through cpu.max
    assert container["resources"]["limits"]["cpu"] == "3"
    address = container["command"].index("--address")
    assert container["command"][address + 1] == "0.0.0.0"
    assert "--name" not in container["command"]
    # The drain: the preStop waits for the fronts to notice, then for the open WebSockets to end,
    # at most --drain-timeout; the grace covers all of it plus fleet's own graceful stop.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:2] == ["python", "-c"]
    low, high = float(pre_stop[3]), float(pre_stop[4])
    assert pre_stop[5] == "http://127.0.0.1:5006/metrics" and high - low == 120
    assert pod["terminationGracePeriodSeconds"] == grace_seconds(build_config(
        {"graceful_timeout": "40", "drain_timeout": "120"}, {}, {}, command="config", app="app.py")) >= high + 40
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE_PATH, "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 5006, "protocol": "TCP"}]
    assert objects["Deployment"]["metadata"]["name"] == "fleet-shop"
    assert manifests(no_metrics=True)["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_the_drain_wait_ends_when_no_websocket_is_open(tmp_path: Path) -> None:
    import http.server
    import subprocess
    import sys
    import threading

    answers = iter(['fleet_websocket_connections{worker="g1w0"} 2.0\n', 'fleet_websocket_connections{worker="g1w0"} 0.0\n'])

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = next(answers, "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command = manifests(drain_timeout="60")["Deployment"]["spec"]["template"]["spec"]["containers"][0][
            "lifecycle"]["preStop"]["exec"]["command"]
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        done = subprocess.run([sys.executable, "-c", command[2], "0", "60", url], timeout=30)
        assert done.returncode == 0
        assert next(answers, None) is None  # asked until it saw none open, then stopped
    finally:
        server.shutdown()


def test_pods_are_named_by_the_downward_api_and_run_the_app_copied_into_the_image() -> None:
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--host-id", "$(POD_NAME)"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert container["workingDir"] == APP_ROOT


def test_no_path_of_the_generating_machine_is_in_the_manifests(tmp_path: Path) -> None:
    app = tmp_path / "proj" / "dashboards" / "sales.py"
    app.parent.mkdir(parents=True)
    app.write_text("")
    out = tmp_path / "fleet.yaml"
    result = run_cli("config", "kubernetes", str(app), str(app.parent), "-n", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert str(tmp_path) not in text and os.getcwd() not in text
    container = next(doc for doc in yaml.safe_load_all(text) if doc and doc["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    assert container["command"][2:4] == [f"{APP_ROOT}/sales.py", f"{APP_ROOT}/dashboards"]
    config = build_config({}, {}, {}, command="config", app=str(app))
    dockerfile = render("dockerfile", config, TARGET)
    assert str(tmp_path) not in dockerfile and f"COPY sales.py {APP_ROOT}/sales.py" in dockerfile


def test_the_front_tier_resolves_the_headless_service_and_drains_like_the_pods() -> None:
    docs = documents(allow_websocket_origin=("example.com",), graceful_timeout="20")
    hosts = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-hosts"))
    assert hosts["spec"]["clusterIP"] == "None"
    app_labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert hosts["spec"]["selector"] == app_labels
    tier = front(allow_websocket_origin=("example.com",), graceful_timeout="20")
    container = tier["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:3] == ["fleet", "balance", "--resolve"]
    assert command[3] == f"{hosts['metadata']['name']}.$(POD_NAMESPACE).svc.cluster.local:5006"
    assert command[command.index("--allow-websocket-origin") + 1] == "example.com"
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]
    assert tier["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 20 + 5
    assert tier["Service"]["spec"]["selector"] == tier["Deployment"]["spec"]["template"]["metadata"]["labels"]
    # What the front runs is what fleet balance accepts.
    from click.testing import CliRunner

    from fleet.cli import main

    result = CliRunner().invoke(main, [*command[1:3], "fleet-hosts.default.svc.cluster.local:5006",
                                       *command[4:], "--help"])
    assert result.exit_code == 0, result.output


def test_route_points_at_the_front_tier_which_keeps_sessions_on_their_pod() -> None:
    objects = manifests(allow_host=("app.example.com", "*.example.org"))
    route = objects["HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    rule = route["spec"]["rules"][0]
    assert "sessionPersistence" not in rule  # the front does it, by session id
    service = front()["Service"]
    assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}]
    assert route["spec"]["hostnames"] == ["app.example.com", "*.example.org"]
    assert isinstance(route["spec"]["parentRefs"][0]["name"], str)


def test_fleet_config_kubernetes_command(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    result = run_cli("config", "kubernetes", "app.py", "-n", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out.read_text()) if doc]
    assert kinds == ["Deployment", "Service", "Deployment", "Service", "HTTPRoute", "PodMonitor"]


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
