"""One server's page loads in headless Chromium, run by bench/pageload.py inside the client namespace.

``python pageload_browser.py JOB_JSON`` prints one JSON line per load. Each run is a cold load
(a fresh profile: empty HTTP cache, no connections) and then a warm one (a new Chromium on the
same profile: its disk cache kept, its connections gone, as for a user who comes back).

What is timed is measured inside the page, relative to navigation start (``performance.now()``):
a script added before any page script (CDP ``Page.addScriptToEvaluateOnNewDocument``) wraps
``window.WebSocket`` to note when the first one opens, and polls every 5 ms for the Bokeh
document to be idle with the plot's view finished painting on a canvas of non-zero size. A load
is done when both happened; its time is the later of the two. ``fetched_ms`` is when the last
byte of the page and of every resource had arrived (Resource Timing): the network's part,
which a busy CPU moves much less than parsing and painting. Bytes are the link's own counters
(the client TUN, IP bytes both ways), read before navigating and once the load is done.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=900,700")

PROBE = """
(() => {
  const probe = window.__pageload = {ws: null, drawn: null};
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('open', () => { if (probe.ws === null) probe.ws = performance.now(); });
    }
  };
  function viewOf(name) {
    const model = Bokeh.documents[0].get_model_by_name(name);
    const stack = [...Bokeh.index];
    while (stack.length) {
      const view = stack.pop();
      if (view.model === model) return view;
      stack.push(...view.children());
    }
    return null;
  }
  const timer = setInterval(() => {
    try {
      if (!window.Bokeh || !Bokeh.documents || Bokeh.documents.length === 0) return;
      const plot = viewOf('plot');
      if (Bokeh.documents[0].is_idle && plot !== null && plot.has_finished()
          && plot.canvas_view.bbox.width > 0 && plot.canvas_view.bbox.height > 0) {
        probe.drawn = performance.now();
        clearInterval(timer);
      }
    } catch (e) { /* BokehJS still loading */ }
  }, 5);
})();
"""

RESULT = """
const probe = window.__pageload;
if (!probe || probe.ws === null || probe.drawn === null) return null;
const nav = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource');
return {ws_ms: probe.ws, drawn_ms: probe.drawn, protocol: nav.nextHopProtocol,
        fetched_ms: Math.max(nav.responseEnd, ...resources.map((r) => r.responseEnd)),
        transfer_bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
        scripts: resources.filter((r) => r.initiatorType === 'script').map((r) => r.name.split('/').pop().split('?')[0])};
"""


def wire_bytes(device: str) -> int:
    stats = Path("/sys/class/net") / device / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def start(job: dict, profile: Path) -> webdriver.Chrome:
    options = Options()
    options.binary_location = job["chromium"]
    for flag in (*FLAGS, *job["flags"], f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = profile.parent / f"chromedriver-{profile.name}.log"
    try:
        driver = webdriver.Chrome(service=Service(job["chromedriver"], log_output=str(log),
                                                  service_args=["--verbose"]), options=options)
    except WebDriverException:
        # Chromium's own words on why it quit (ChromeDriver's log holds its stderr).
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = [line for line in text.splitlines() if "[INFO]" not in line and "[DEBUG]" not in line]
        print("pageload: Chromium did not start; from ChromeDriver's log:\n" + "\n".join(lines[-15:]),
              file=sys.stderr, flush=True)
        raise
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


def load(job: dict, profile: Path, cache: str) -> dict:
    """One navigation in a new Chromium on ``profile``; the browser is quit before returning."""
    driver = start(job, profile)
    try:
        before = wire_bytes(job["device"])
        driver.get(job["url"])
        deadline = time.monotonic() + job["timeout"]
        while (result := driver.execute_script(RESULT)) is None:
            if time.monotonic() > deadline:
                console = [entry["message"] for entry in driver.get_log("browser")]
                raise TimeoutError(f"{job['url']}: no plot drawn and WebSocket open within "
                                   f"{job['timeout']} s; console: {console[-5:]}")
            time.sleep(0.02)
        result["wire_bytes"] = wire_bytes(job["device"]) - before
    finally:
        driver.quit()
    result["ms"] = max(result["ws_ms"], result["drawn_ms"])
    result["cache"] = cache
    return result


def main(job: dict) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through `finally`: Chromium quits
    root = Path(job["profiles"])
    for run in range(job["runs"]):
        profile = root / f"profile-{run}"
        shutil.rmtree(profile, ignore_errors=True)
        for cache in ("cold", "warm"):
            print(json.dumps({"run": run, **load(job, profile, cache)}), flush=True)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
