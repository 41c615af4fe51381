"""Static requests/s: a BokehJS file served by fleet's proxy against the same file from a worker.

    python bench/static.py                 # wrk -t1 -c20, 5 s per round, median of 3 rounds
    python bench/static.py --duration 10 --rounds 5 --file js/bokeh.min.js

Starts ``fleet up examples/bokeh_random -n 1`` on free ports, then runs ``wrk`` against
``http://127.0.0.1:<proxy>/static/<file>?v=bench`` (answered by the proxy from memory when it
serves /static/ itself) and ``http://127.0.0.1:<worker>/static/<file>?v=bench`` (Bokeh's
Tornado static handler). A benchmark, not a test: compare the ratio, not the numbers.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {timeout:.0f} s")


def wrk(url: str, duration: int) -> float:
    done = subprocess.run(["wrk", "-t1", "-c20", f"-d{duration}s", url], capture_output=True, text=True, check=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if not match:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{done.stdout}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file", default="js/bokeh.min.js")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    port, worker = free_port(), free_port()
    fleet = subprocess.Popen([sys.executable, "-m", "fleet", "up", str(ROOT / "examples" / "bokeh_random"),
                              "-n", "1", "--port", str(port), "--base-port", str(worker),
                              "--control-socket", f"/tmp/fleet-bench-static-{port}.sock"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proxy_url = f"http://127.0.0.1:{port}/static/{args.file}?v=bench"
        worker_url = f"http://127.0.0.1:{worker}/static/{args.file}?v=bench"
        wait_ok(proxy_url)
        wait_ok(worker_url)
        size = len(urllib.request.urlopen(proxy_url, timeout=5).read())
        results = {"fleet proxy": [], "worker (Bokeh/Tornado)": []}
        for _ in range(args.rounds):
            results["fleet proxy"].append(wrk(proxy_url, args.duration))
            results["worker (Bokeh/Tornado)"].append(wrk(worker_url, args.duration))
        print(f"static/{args.file} ({size} bytes), wrk -t1 -c20 -d{args.duration}s, median of {args.rounds}:")
        medians = {name: statistics.median(values) for name, values in results.items()}
        for name, value in medians.items():
            print(f"  {name:24s} {value:10.0f} requests/s")
        print(f"  ratio proxy/worker       {medians['fleet proxy'] / medians['worker (Bokeh/Tornado)']:10.2f}")
    finally:
        fleet.terminate()
        try:
            fleet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fleet.kill()
            fleet.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
