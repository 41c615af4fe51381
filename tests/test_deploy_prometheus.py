"""deploy/prometheus and deploy/grafana: valid for promtool, and only metric names fleet exports."""

from __future__ import annotations

import json
import os
import re
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from fleet.balancer.stats import ProxyStats
from fleet.metrics import make_registry, render
from fleet.supervisor.info import WorkerInfo
from support import ROOT, require_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fleet-dashboard.json"
PROMQL_FUNCTIONS_AND_WORDS = {"by", "rate", "sum", "increase", "histogram_quantile", "or", "le"}


def exported_sample_names() -> set[str]:
    stats = ProxyStats()
    stats.upstream("w0").record_response("GET", 200, 0.01)
    stats.client_error("bad_request")
    worker = WorkerInfo(index=0, id="g1w0", port=5100, pid=os.getpid(), state="ready", started_at=1.0,
                        restarts=0, crash_looping=False, last_exit=None, slot="w0")
    text = render(make_registry(stats=stats, workers=lambda: [worker], desired=lambda: 1,
                                recycles=lambda: {"max_requests": 1})).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def used_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bfleet_[a-z_]+\b", text))


def test_promtool_accepts_config_and_rules_and_the_rule_tests_pass() -> None:
    promtool = require_tool("promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_sample_names()
    alerts = (PROMETHEUS / "alerts.yml").read_text()
    dashboard = DASHBOARD.read_text()
    for source, text in (("alerts.yml", alerts), ("fleet-dashboard.json", dashboard)):
        unknown = used_metric_names(text) - exported
        assert not unknown, f"{source} uses metrics fleet does not export: {sorted(unknown)}"


def test_dashboard_is_valid_grafana_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
