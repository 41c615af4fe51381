"""Take the README's screenshot of the status page: ``python tests/browser/status_screenshot.py``.

Starts ``fleet up examples/tornado_hello.py -n 3`` on free ports, sends a rising and falling
stream of requests from 4 clients for about a minute (bounded, loopback only), killss one worker half-way so
the page shows a restart and an exit, then saves ``docs/status-page.png`` from headless
Chromium at 1000 px wide. Everything it started is stopped at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bokeh_page import start_chromium  # noqa: E402
from support import EXAMPLES, ROOT, http_get, require_tool, wait_until  # noqa: E402
from up_helpers import up  # noqa: E402

SECONDS = 70


def traffic(url: str, started: float, stop: threading.Event) -> None:
    """One client: a request, then a pause that follows a slow wave (busier mid-run)."""
    while not stop.is_set() and time.monotonic() - started < SECONDS + 60:
        urllib.request.urlopen(url, timeout=5).read()
        wave = math.sin(math.pi * (time.monotonic() - started) / SECONDS) ** 2
        stop.wait(0.005 + 0.05 * (1 - wave))


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="fleet-shot-"))
    fleet = up(workdir, str(EXAMPLES / "tornado_hello.py"), "--name", "hello", workers=3, proxy=True)
    driver = None
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        fleet.proc.wait_for_output(r"status page: ", timeout=60)
        url = f"http://127.0.0.1:{fleet.port}/"
        started = time.monotonic()
        clients = [threading.Thread(target=traffic, args=(url, started, stop)) for _ in range(4)]
        for client in clients:
            client.start()
        stop.wait(SECONDS * 0.6)
        os.kill(fleet.worker("g1w1")["pid"], signal.SIGKILL)
        stop.wait(SECONDS * 0.4)
        wait_until(lambda: fleet.worker("g1w1")["state"] == "ready", timeout=30, message="g1w1 back")
        assert http_get(f"{url}_fleet/status.json")[0] == 200
        driver = start_chromium(require_tool("chromium"), require_tool("chromedriver"), workdir / "profile")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1000, "height": 540, "deviceScaleFactor": 1, "mobile": False})
        driver.get(f"http://localhost:{fleet.port}/_fleet/")
        wait_until(lambda: driver.execute_script("return document.body.dataset.updates") == "2", timeout=20,
                   message="two updates of the page")
        target = ROOT / "docs" / "status-page.png"
        driver.save_screenshot(str(target))
        print(target)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=10)
        if driver is not None:
            driver.quit()
        fleet.proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
