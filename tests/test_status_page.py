"""The status page (``/_fleet/``, ``/_fleet/status.json``) on a real fleet: on the proxy port,
and with ``--no-proxy`` on the ``--metrics-port`` listener, both under ``--metrics-allow`` as
judged through ``--trusted-proxy``. The recorder app (tests/apps/recorder.py) tells whether a
refused request reached a worker. The page in a browser: ``tests/browser/test_status_page_browser.py``."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from fleet.status_page import CONTENT_SECURITY_POLICY
from support import free_port, http_get, wait_until
from up_helpers import up

APPS = Path(__file__).resolve().parent / "apps"
RECORDER = str(APPS / "recorder.py")
PAGE_FILES = {"": "text/html", "status.js": "text/javascript", "status.css": "text/css", "icon.svg": "image/svg+xml",
              "status.json": "application/json"}
# Only 127.0.0.1 may look; a client the trusted proxy on 127.0.0.1 forwards from elsewhere may not.
ACCESS = ("--metrics-allow", "127.0.0.1/32", "--trusted-proxy", "127.0.0.1/32")
OUTSIDER = {"X-Forwarded-For": "203.0.113.9"}


def status(port: int) -> dict[str, Any]:
    code, _, body = http_get(f"http://127.0.0.1:{port}/_fleet/status.json")
    assert code == 200, (code, body)
    return json.loads(body)  # type: ignore[no-any-return]


def check_page_files(port: int) -> None:
    """Every file of the page answers with its type and the strict policy; nothing inline,
    nothing fetched from another origin."""
    for name, content_type in PAGE_FILES.items():
        code, headers, body = http_get(f"http://127.0.0.1:{port}/_fleet/{name}")
        assert code == 200 and headers["Content-Type"].startswith(content_type), (name, code, headers)
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        if name != "status.json":
            assert not re.search(rb"(?:https?:)?//[a-z]", body.replace(b"http://www.w3.org/2000/svg", b"")), name
    html = http_get(f"http://127.0.0.1:{port}/_fleet/")[2]
    assert re.findall(rb"<script[^>]*>", html) == [b'<script src="status.js" defer>']
    assert b"<style" not in html and b" style=" not in html and not re.search(rb"\son[a-z]+=", html)


def refused_everywhere(port: int) -> None:
    for name in PAGE_FILES:
        code, _, body = http_get(f"http://127.0.0.1:{port}/_fleet/{name}", headers=OUTSIDER)
        assert code == 404 and b"fleet" not in body.lower(), (name, code, body)
    for path in ("/_fleet/health/live", "/_fleet/health/ready"):
        assert http_get(f"http://127.0.0.1:{port}{path}", headers=OUTSIDER)[0] == 404


def test_status_page_on_the_proxy_follows_workers_traffic_and_exits(tmp_path: Path) -> None:
    fleet = up(tmp_path, RECORDER, *ACCESS, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"status page: http://localhost:{fleet.port}/_fleet/", timeout=60)
        check_page_files(fleet.port)
        first = status(fleet.port)
        assert [(w["id"], w["state"], w["generation"]) for w in first["workers"]] == [
            ("g1w0", "ready", 1), ("g1w1", "ready", 1)]
        assert first["desired"] == 2 and first["interval"] == 2.0 and first["exits"] == []

        for _ in range(30):
            assert http_get(f"http://127.0.0.1:{fleet.port}/hello")[0] == 200
        wait_until(lambda: sum(w["requests"] for w in status(fleet.port)["workers"]) >= 30, timeout=15,
                   message="30 requests counted on the page")
        wait_until(lambda: max(status(fleet.port)["history"]["requests_per_second"]) > 0, timeout=15,
                   message="a chart point with requests/s > 0")

        victim = status(fleet.port)["workers"][1]
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> bool:
            page = status(fleet.port)
            row = next(w for w in page["workers"] if w["id"] == victim["id"])
            return (row["restarts"] == 1 and row["state"] == "ready" and row["pid"] != victim["pid"]
                    and [(e["worker"], e["pid"], e["signal"]) for e in page["exits"]]
                    == [(victim["id"], victim["pid"], "SIGKILL")])

        wait_until(restarted, timeout=30, message="the page shows the kill and the restart")

        refused_everywhere(fleet.port)
        for index in range(2):  # the refused requests never reached a worker
            received = json.loads(http_get(f"http://127.0.0.1:{fleet.base_port + index}/_received")[2])
            assert not [uri for uri in received["heads"] if uri.startswith("/_fleet")], received["heads"]


def test_no_proxy_serves_status_and_health_on_the_metrics_listener(tmp_path: Path) -> None:
    metrics_port = free_port()
    fleet = up(tmp_path, RECORDER, *ACCESS, "--metrics-port", str(metrics_port), workers=2)
    with fleet.proc:
        fleet.proc.wait_for_output(rf"status page: http://localhost:{metrics_port}/_fleet/", timeout=60)
        check_page_files(metrics_port)
        page = status(metrics_port)
        assert page["proxy"] is None and [w["state"] for w in page["workers"]] == ["ready", "ready"]
        assert all(w["connections"] is None and w["requests_per_second"] is None for w in page["workers"])
        assert http_get(f"http://127.0.0.1:{metrics_port}/_fleet/health/live")[0] == 200
        code, _, body = http_get(f"http://127.0.0.1:{metrics_port}/_fleet/health/ready")
        assert code == 200 and json.loads(body)["ready"] == 2
        wait_until(lambda: any(w["cpu_percent"] is not None for w in status(metrics_port)["workers"]),
                   timeout=15, message="CPU % of the workers after a second sample")
        assert b"fleet_worker_up" in http_get(f"http://127.0.0.1:{metrics_port}/metrics")[2]
        refused_everywhere(metrics_port)
        assert http_get(f"http://127.0.0.1:{metrics_port}/metrics", headers=OUTSIDER)[0] == 404
