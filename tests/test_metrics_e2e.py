"""/metrics on a running `fleet up`: exact counts, restarts, worker_up, and where it is served."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
from prometheus_client.parser import text_string_to_metric_families

from support import EXAMPLES, FRESH_METRICS, free_port, free_port_range, http_get, start_fleet, wait_until

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = http_get(url)
    assert status == 200, (status, body[:200])
    assert headers.get("Content-Type", "").startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def worker_pid(fleet_pid: int, port: int) -> int:
    """The pid of the worker process listening on ``port``, a descendant of the fleet master."""
    for child in psutil.Process(fleet_pid).children(recursive=True):
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no worker listening on {port}")


def test_requests_total_rises_by_exactly_n_for_the_worker_that_served_them() -> None:
    port, base = free_port(), free_port_range(2)
    with start_fleet("up", TORNADO_APP, "-n", "2", "--port", str(port), "--base-port", str(base),
                     env=FRESH_METRICS) as fleet:
        fleet.wait_for_output(r"w1:\S* .*ready|ready.*w1", timeout=30)
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: value(scrape(metrics), "fleet_worker_up", worker="w1") == 1, 20, message="w1 up")
        before = scrape(metrics)
        requests = 25
        for _ in range(requests):
            status, _, body = http_get(f"http://127.0.0.1:{port}/", headers={"Cookie": "fleet_affinity=g1w1"})
            assert status == 200
        key = dict(worker="w1", method="GET", code="200")
        # FRESH_METRICS: each scrape is a new render, so this poll returns at its first scrape.
        after = wait_until(lambda: (lambda s: s if value(s, "fleet_requests_total", **key) > value(
            before, "fleet_requests_total", **key) else None)(scrape(metrics)), 5, message="a fresh render")
        assert isinstance(after, dict)
        assert value(after, "fleet_requests_total", **key) - value(before, "fleet_requests_total", **key) == requests
        w0 = dict(worker="w0", method="GET", code="200")
        assert value(after, "fleet_requests_total", **w0) == value(before, "fleet_requests_total", **w0)
        assert value(after, "fleet_request_duration_seconds_count", worker="w1") - value(
            before, "fleet_request_duration_seconds_count", worker="w1") == requests
        assert value(after, "fleet_bytes_sent_total") > value(before, "fleet_bytes_sent_total")
        assert value(after, "fleet_workers_desired") == 2
        assert value(after, "fleet_worker_resident_memory_bytes", worker="w0") > 1_000_000
        assert value(after, "fleet_worker_start_time_seconds", worker="w0") > time.time() - 600


def test_killed_worker_counts_one_restart_and_is_down_until_ready_again(tmp_path) -> None:
    # The worker sleeps 3 s before listening on every start after the first, so the scrape
    # taken right after the kill reliably sees it down.
    marker = tmp_path / "started-{port}"
    cmd = (f"{sys.executable} -c \"import os,sys,time; m='{marker}'.format(port=sys.argv[1]); "
           f"os.path.exists(m) and time.sleep(3); open(m,'w').close(); "
           f"os.execvp(sys.executable,[sys.executable,'-m','http.server','--bind','127.0.0.1',sys.argv[1]])\" {{port}}")
    port, base = free_port(), free_port_range(2)
    with start_fleet("up", "--cmd", cmd, "-n", "2", "--port", str(port), "--base-port", str(base),
                     env=FRESH_METRICS) as fleet:
        metrics = f"http://127.0.0.1:{port}/metrics"
        # Both up before the kill: w0 is checked up while w1 is down.
        wait_until(lambda: (lambda s: value(s, "fleet_worker_up", worker="w0") == value(
            s, "fleet_worker_up", worker="w1") == 1)(scrape(metrics)), 30, message="w0 and w1 up")
        assert value(scrape(metrics), "fleet_worker_restarts_total", worker="w1") == 0
        os.kill(worker_pid(fleet.pid, base + 1), signal.SIGKILL)
        wait_until(lambda: value(scrape(metrics), "fleet_worker_up", worker="w1") == 0, 3, message="w1 down")
        down = scrape(metrics)
        assert value(down, "fleet_worker_up", worker="w0") == 1
        wait_until(lambda: value(scrape(metrics), "fleet_worker_up", worker="w1") == 1, 20, message="w1 back")
        final = scrape(metrics)
        assert value(final, "fleet_worker_restarts_total", worker="w1") == 1
        assert value(final, "fleet_worker_restarts_total", worker="w0") == 0


def test_metrics_port_path_and_no_metrics() -> None:
    port, metrics_port, base = free_port(), free_port(), free_port_range(1)
    with start_fleet("up", TORNADO_APP, "-n", "1", "--port", str(port), "--base-port", str(base),
                     "--metrics-port", str(metrics_port), "--metrics-path", "/prom", env=FRESH_METRICS) as fleet:
        wait_until(lambda: value(scrape(f"http://127.0.0.1:{metrics_port}/prom"), "fleet_worker_up", worker="w0") == 1,
                   30, message="metrics on their own port")
        # with a metrics port, the proxy port does not answer /prom itself: the app does (404)
        status, _, _ = http_get(f"http://127.0.0.1:{port}/prom")
        assert status == 404
        fleet.stop()
    port, base = free_port(), free_port_range(1)
    with start_fleet("up", TORNADO_APP, "-n", "1", "--port", str(port), "--base-port", str(base), "--no-metrics"):
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/")[0] == 200, 30, message="proxy up")
        status, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 404 and b"fleet_requests_total" not in body
