"""/_fleet/health/live and /_fleet/health/ready on fleet's proxy port, with a real fleet."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from support import FleetProcess, free_port, free_port_range, http_get, wait_until

HTTP_SERVER = f"exec {sys.executable} -m http.server --bind 127.0.0.1 {{port}}"


def test_live_and_ready_follow_the_workers(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    base, port = free_port_range(1), free_port()
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    proc = FleetProcess(["up", "--cmd", f"test -e {broken} && exit 3; {HTTP_SERVER}", "-n", "1",
                         "--base-port", str(base), "--port", str(port)],
                        env={"XDG_RUNTIME_DIR": str(run)}, cwd=str(tmp_path))
    with proc:
        pid = int(proc.wait_for_output(r"w0:\d+ ready \(pid (\d+)", timeout=60).group(1))
        proc.wait_for_output(r"ready: open", timeout=30)
        status, headers, body = http_get(f"http://127.0.0.1:{port}/_fleet/health/live")
        assert status == 200 and json.loads(body) == {"status": "live"}
        assert headers["Content-Type"].startswith("application/json")
        status, _, body = http_get(f"http://127.0.0.1:{port}/_fleet/health/ready")
        assert status == 200 and json.loads(body) == {"status": "ready", "ready": 1, "workers": 1, "desired": 1}

        broken.touch()  # the only worker now dies at every start: not ready, fleet still live
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/_fleet/health/ready")[0] == 503, timeout=20,
                   message="ready 503 while the worker crash-loops")
        assert http_get(f"http://127.0.0.1:{port}/_fleet/health/live")[0] == 200
        broken.unlink()
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/_fleet/health/ready")[0] == 200, timeout=60,
                   message="ready 200 once the worker is back")
