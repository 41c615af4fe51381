"""The collectors turn proxy counters and worker snapshots into the design's metric families."""

from __future__ import annotations

import subprocess
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

from fleet.balancer.stats import ProxyStats
from fleet.metrics import make_registry, render, tree_usage
from fleet.supervisor.info import WorkerInfo


def scrape(registry) -> dict[str, list]:
    """Family name -> samples, parsed by prometheus-client's own parser."""
    families = text_string_to_metric_families(render(registry).decode())
    return {family.name: family.samples for family in families}


def sample(samples, name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, samples)
    return matches[0]


def worker(index: int, **changes) -> WorkerInfo:
    base = dict(index=index, id=f"w{index}", port=5100 + index, pid=None, state="ready", started_at=None,
                restarts=0, crash_looping=False, last_exit=None)
    base.update(changes)
    return WorkerInfo(**base)


def test_proxy_counters_are_exported_exactly() -> None:
    stats = ProxyStats()
    w1 = stats.upstream("w1")
    for _ in range(7):
        w1.record_response("GET", 200, 0.003)
    w1.record_response("POST", 502, 2.0)
    w1.active_requests = 2
    w1.websockets = 3
    w1.connect_errors = 1
    stats.retries = 4
    stats.client_error("header_too_large")
    stats.bytes_received, stats.bytes_sent = 1234, 5678

    families = scrape(make_registry(stats=stats))
    requests = families["fleet_requests"]
    assert sample(requests, "fleet_requests_total", worker="w1", method="GET", code="200") == 7
    assert sample(requests, "fleet_requests_total", worker="w1", method="POST", code="502") == 1
    duration = families["fleet_request_duration_seconds"]
    assert sample(duration, "fleet_request_duration_seconds_count", worker="w1") == 8
    assert sample(duration, "fleet_request_duration_seconds_bucket", worker="w1", le="0.005") == 7
    assert sample(duration, "fleet_request_duration_seconds_bucket", worker="w1", le="+Inf") == 8
    assert abs(sample(duration, "fleet_request_duration_seconds_sum", worker="w1") - 2.021) < 1e-9
    assert sample(families["fleet_active_requests"], "fleet_active_requests", worker="w1") == 2
    assert sample(families["fleet_websocket_connections"], "fleet_websocket_connections", worker="w1") == 3
    assert sample(families["fleet_upstream_connect_errors"], "fleet_upstream_connect_errors_total", worker="w1") == 1
    assert sample(families["fleet_retries"], "fleet_retries_total") == 4
    assert sample(families["fleet_client_errors"], "fleet_client_errors_total", reason="header_too_large") == 1
    assert sample(families["fleet_bytes_received"], "fleet_bytes_received_total") == 1234
    assert sample(families["fleet_bytes_sent"], "fleet_bytes_sent_total") == 5678


def test_worker_families_read_the_process_tree_at_scrape_time() -> None:
    # A real process with a child that burns a little CPU and holds memory.
    code = "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','x=bytearray(30*2**20);import time;time.sleep(30)']); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            usage = tree_usage(parent.pid)
            if usage and usage[1] > 40 * 2**20:
                break
            time.sleep(0.05)
        started = time.time()
        workers = [worker(0, pid=parent.pid, started_at=started, restarts=2),
                   worker(1, state="backoff", crash_looping=True)]
        families = scrape(make_registry(workers=lambda: workers, desired=lambda: 2))
        assert sample(families["fleet_worker_up"], "fleet_worker_up", worker="w0") == 1
        assert sample(families["fleet_worker_up"], "fleet_worker_up", worker="w1") == 0
        assert sample(families["fleet_worker_restarts"], "fleet_worker_restarts_total", worker="w0") == 2
        assert sample(families["fleet_worker_crash_looping"], "fleet_worker_crash_looping", worker="w1") == 1
        # parent + child: well over the child's 30 MiB buffer
        rss = sample(families["fleet_worker_resident_memory_bytes"], "fleet_worker_resident_memory_bytes", worker="w0")
        assert rss > 40 * 2**20
        assert sample(families["fleet_worker_cpu_seconds"], "fleet_worker_cpu_seconds_total", worker="w0") > 0
        assert sample(families["fleet_worker_start_time_seconds"], "fleet_worker_start_time_seconds", worker="w0") == started
        assert sample(families["fleet_workers_desired"], "fleet_workers_desired") == 2
        # a worker with no process has no cpu/rss sample rather than a made-up zero
        assert not [s for s in families["fleet_worker_resident_memory_bytes"] if s.labels["worker"] == "w1"]
    finally:
        for child in __import__("psutil").Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_tree_usage_of_a_gone_process_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert tree_usage(proc.pid) is None


def test_event_loop_lag_is_exported_per_worker_when_fleet_watches_loops() -> None:
    workers = [worker(0), worker(1)]
    lags = {"w0": 0.004, "w1": 2.5}
    families = scrape(make_registry(workers=lambda: workers, desired=lambda: 2, loop_lags=lambda: lags))
    gauge = families["fleet_worker_event_loop_lag_seconds"]
    assert sample(gauge, "fleet_worker_event_loop_lag_seconds", worker="w0") == 0.004
    assert sample(gauge, "fleet_worker_event_loop_lag_seconds", worker="w1") == 2.5
    # --worker-timeout 0 (or fleet balance): no loop is watched, no family
    assert "fleet_worker_event_loop_lag_seconds" not in scrape(make_registry(workers=lambda: workers))
