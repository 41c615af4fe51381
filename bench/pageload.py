"""How long a Bokeh dashboard takes to open in Chromium over a shaped link, per server, in one run.

    sudo .venv/bin/python bench/pageload.py [--rate 20] [--rtt 40] [--runs 3] [--workers 2]
                                            [--servers bokeh,nginx,fleet,fleet-tls,fleet-h2]
                                            [--app DIR] [--nice N] [--fleet-arg ARG] [--json FILE]

The bench makes two network namespaces joined by a link shaped to ``--rate`` Mbit/s with
``--rtt`` ms added round-trip time (pageload_net.py), starts each server in one namespace
(pageload_servers.py) and headless Chromium in the other (pageload_browser.py). The app
(pageload_app/) has a slider, a WebGL plot with a LaTeX axis label and a table, so BokehJS loads
bokeh, bokeh-gl, bokeh-widgets, bokeh-tables and bokeh-mathjax. Timed: navigation start to the
plot drawn and the WebSocket open, whichever is later; cold (fresh profile) and warm (a new
browser on the same profile). Bytes: the link's own counters, both directions. Everything it
made (namespaces, TUNs, servers, browsers) is removed at the end, on error and on
SIGTERM/SIGINT/SIGHUP too. Needs root (namespaces), ip, tc, curl, openssl, nginx, chromium and
chromedriver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pageload_net import Link, Shape  # noqa: E402
from pageload_servers import APP, SERVERS, Running, Servers  # noqa: E402

BROWSER = Path(__file__).resolve().parent / "pageload_browser.py"
TOOLS = ("ip", "tc", "curl", "openssl", "nginx", "chromium", "chromedriver")
LOAD_TIMEOUT = 60.0


def missing_tools(servers: list[str]) -> list[str]:
    needed = [t for t in TOOLS if t != "nginx" or "nginx" in servers]
    return [tool for tool in needed if shutil.which(tool) is None]


def summary(loads: list[dict], cache: str) -> dict | None:
    """Median, min and max time, median bytes on the wire and in the browser's own count."""
    picked = [load for load in loads if load["cache"] == cache]
    if not picked:
        return None
    times = [load["ms"] for load in picked]
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "fetched_ms": statistics.median(load["fetched_ms"] for load in picked),
            "wire_bytes": statistics.median(load["wire_bytes"] for load in picked),
            "transfer_bytes": statistics.median(load["transfer_bytes"] for load in picked),
            "protocol": picked[0]["protocol"], "runs": len(picked)}


def table(rows: dict[str, dict | str]) -> str:
    """One line per server: cold and warm time (median, min-max), when the last byte of a cold
    load arrived (median), bytes on the wire, protocol and the encoding BokehJS came in."""
    head = (f"{'server':<10} {'protocol':<9} {'js encoding':<12} {'cold ms (min-max)':>21} "
            f"{'cold fetched':>12} {'cold wire':>10} {'warm ms (min-max)':>21} {'warm wire':>10}")
    lines = [head, "-" * len(head)]
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"{name:<10} {row}")
            continue
        cold, warm = row["cold"], row["warm"]
        lines.append(f"{name:<10} {cold['protocol']:<9} {row['js_encoding']:<12} {span(cold):>21} "
                     f"{cold['fetched_ms']:>10.0f}ms {cold['wire_bytes'] / 1e6:>8.2f}MB "
                     f"{span(warm):>21} {warm['wire_bytes'] / 1e6:>8.2f}MB")
    return "\n".join(lines)


def span(stats: dict) -> str:
    return f"{stats['median_ms']:>7.0f} ({stats['min_ms']:.0f}-{stats['max_ms']:.0f})"


def ratios(rows: dict[str, dict | str], base: str = "nginx") -> list[str]:
    """Each server's cold time and cold bytes against the seed setup's, as the issue asks."""
    seed = rows.get(base)
    if not isinstance(seed, dict):
        return []
    out = []
    for name, row in rows.items():
        if isinstance(row, dict) and name != base:
            out.append(f"{name}/{base} cold: time {row['cold']['median_ms'] / seed['cold']['median_ms']:.2f}, "
                       f"bytes {row['cold']['wire_bytes'] / seed['cold']['wire_bytes']:.2f}")
    return out


def browse(link: Link, running: Running, runs: int, workdir: Path) -> list[dict]:
    """Run pageload_browser.py in the client namespace; one dict per load."""
    job = {"url": running.url, "runs": runs, "flags": list(running.flags), "device": link.client_dev,
           "chromium": shutil.which("chromium"), "chromedriver": shutil.which("chromedriver"),
           "profiles": str(workdir / f"profiles-{running.name}"), "timeout": LOAD_TIMEOUT}
    # Each load has its own deadline; this one only stops a browser that hangs past all of them.
    limit = runs * 2 * (LOAD_TIMEOUT + 30)
    proc = subprocess.Popen(link.in_client([sys.executable, str(BROWSER), json.dumps(job)]), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:  # interrupted: let it quit its Chromium, then end its session
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    if proc.returncode:
        raise RuntimeError(f"{running.name}: the browser failed:\n{err[-3000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, dict | str]:
    rows: dict[str, dict | str] = {}
    with Link(Shape(args.rate, args.rtt), nice=args.nice) as link:
        servers = Servers(link, workdir, args.workers, tuple(args.fleet_arg), args.app)
        for name in args.servers:
            started = time.monotonic()
            with servers.running(name) as running:
                if isinstance(running, str):
                    rows[name] = running
                else:
                    loads = browse(link, running, args.runs, workdir)
                    rows[name] = {"cold": summary(loads, "cold"), "warm": summary(loads, "warm"),
                                  "js_encoding": running.js_encoding, "offers_h2": running.offers_h2,
                                  "loads": loads}
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="link rate, Mbit/s (default 20)")
    parser.add_argument("--rtt", type=float, default=40.0, help="added round-trip time, ms (default 40)")
    parser.add_argument("--runs", type=int, default=3, help="cold+warm loads per server (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="workers behind nginx and fleet (default 2)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, in order (default {','.join(SERVERS)})")
    parser.add_argument("--fleet-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `fleet up` (repeat for several)")
    parser.add_argument("--app", type=Path, default=APP,
                        help="the Bokeh app directory to load (default bench/pageload_app); its plot "
                             "must be named 'plot', which the bench waits for")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the servers and browsers (default 0; e.g. -10 on a shared "
                             "machine, which takes CPU from everything else)")
    parser.add_argument("--json", type=Path, help="also write every load and summary here")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown or not args.servers:
        parser.error(f"--servers: unknown {unknown}; choose from {', '.join(SERVERS)}")
    if not (0.1 <= args.rate <= 10_000) or not (0 <= args.rtt <= 2_000):
        parser.error("--rate must be 0.1..10000 Mbit/s and --rtt 0..2000 ms")
    if not (args.app / "main.py").is_file():
        parser.error(f"--app: {args.app} is not a Bokeh app directory (no main.py)")
    if not 1 <= args.runs <= 50 or not 1 <= args.workers <= 16 or not -20 <= args.nice <= 19:
        parser.error("--runs must be 1..50, --workers 1..16 and --nice -20..19")
    return args


def on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `with`: servers, link, namespaces


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    missing = missing_tools(args.servers)
    if missing:
        print(f"pageload: missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fleet-pageload-") as tmp:
        rows = measure(args, Path(tmp))
    elapsed = time.monotonic() - started
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"page load, {args.rate:g} Mbit/s, +{args.rtt:g} ms RTT, {args.runs} runs, "
          f"{args.workers} workers, nice {args.nice}; {when}")
    print("ms: median (min-max) from navigation to the plot drawn and the WebSocket open; "
          "fetched: last byte of the page and its resources; wire: IP bytes both ways")
    print(table(rows))
    for line in ratios(rows):
        print(line)
    # Chromium's parse and paint are CPU-bound: a busy machine moves every time, so say how busy.
    print(f"bench took {elapsed:.0f} s; load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end ({os.cpu_count()} CPUs)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"},
                                         "date": when, "elapsed_s": elapsed, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
