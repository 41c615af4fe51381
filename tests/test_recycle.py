"""Recycling on real processes: --max-age replaces a worker through a new one (no request
failed), --max-memory-hard kills at once and restarts on the same port, --max-requests is
refused with --no-proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import wait_until
from test_drills import LoadGenerator, metric, scrape
from test_reload import rows, start
from up_helpers import run_cli


@pytest.mark.slow
def test_max_age_replaces_the_worker_through_a_new_one_in_the_other_block(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path, "--max-age", "2", workers=1)
    with fleet.proc:
        load = LoadGenerator(fleet.port, clients=2)
        try:
            wait_until(lambda: any(i.startswith("g2") and w["state"] == "ready" for i, w in rows(fleet).items()),
                       30, message="g1w0 replaced after --max-age")
        finally:
            outcome = load.stop()
        assert outcome.sent > 20 and outcome.failed == 0, (outcome.statuses, outcome.errors)
        # (It recycles again 2 s later: read where g2w0 ran from the output, not from status.)
        fleet.proc.wait_for_output(rf"g2w0:{fleet.surge_port} ready", 10)
        fleet.proc.wait_for_output(r"g1w0:\d+ recycling \(max_age: ready for more than --max-age 2 s\)", 10)
        assert metric(scrape(fleet.port), "fleet_worker_recycles_total", reason="max_age") >= 1


def test_max_memory_hard_kills_at_once_and_restarts_on_the_same_port(tmp_path: Path) -> None:
    fleet, _ = start(tmp_path, "--max-memory-hard", "1MiB", workers=1)
    with fleet.proc:
        first = rows(fleet)["g1w0"]
        fleet.proc.wait_for_output(r"g1w0:\d+ killed \(max_memory_hard: its processes use \d+ MiB, more than "
                                   r"--max-memory-hard 1 MiB\); restarting it on its port", 20)
        wait_until(lambda: rows(fleet)["g1w0"]["pid"] not in (None, first["pid"]), 20, message="g1w0 restarted")
        row = rows(fleet)["g1w0"]
        assert row["port"] == first["port"] and row["restarts"] == 0  # not counted as a crash
        assert fleet.status()["recycles"]["max_memory_hard"] >= 1


def test_max_requests_needs_the_proxy() -> None:
    result = run_cli("up", "app.py", "--no-proxy", "--max-requests", "100")
    assert result.returncode == 2
    assert "--max-requests needs the built-in proxy" in result.stderr
