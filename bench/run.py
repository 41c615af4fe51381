"""fleet's proxy side by side with nginx and HAProxy, in one run, on the same backends.

    python bench/run.py                    # or: make bench
    python bench/run.py --rounds 5 --duration 10 --skip-websocket

What runs (2-core machine: load generator and backends on core 0, the proxy alone on core 1):

- backends: one nginx (1 worker) with three ``return 200`` servers, so the backend is never
  the bottleneck; for WebSockets, ``bench/ws_tools.py serve`` (a byte echo after the handshake);
- proxies: nginx ``least_conn`` (keepalive 64, 1 worker process), HAProxy ``leastconn``
  (1 thread), ``fleet balance``, and ``fleet balance`` while ``/metrics`` is scraped every
  second (what Prometheus adds); plus "direct" (wrk straight to one backend) as the ceiling;
  ``fleet x2``: ``--proxy-processes 2`` on the proxy's one core (the cost of the machinery:
  CPU per request of master + 2 proxy processes + the spare), and ``fleet x2 cores 0-1``: the
  same free to use both cores, which it shares with wrk and the backends (what a second core
  buys on this machine; on a machine with free cores the two processes would each have one);
- HTTP: ``wrk -t1 -c50 --latency`` small keep-alive GETs, median of ``--rounds`` rounds, with
  each proxy's CPU time per request (user + system of its process tree over the wrk run,
  divided by the requests wrk completed) and how busy that kept it (CPU s / wall s: ~100% is
  a saturated core). On a machine shared with other work, CPU µs per request is the figure to
  compare between runs; requests/s moves with whatever else runs;
- WebSocket: messages/s relayed (50 connections, 16 frames in flight each), and proxy RSS per
  idle WebSocket with 5,000 open;
- end to end with real Tornado workers (``--skip-e2e`` to leave out): ``fleet up
  examples/tornado_hello.py -n 2`` against nginx ``least_conn`` in front of ``fleet up --no-proxy``
  running the same two workers; the proxy's CPU is its own (fleet's master process, not the
  workers; nginx's master and worker).

CPU µs per request is measured at saturation: wrk is a closed loop (50 connections, each sends
its next request when the answer came), so the proxy runs as fast as it can; the "busy" column
(CPU seconds / wall seconds) says how close to one full core that was.

Before and after: ``--base-src DIR/src`` (an older fleet, ``git archive COMMIT src | tar -x -C
DIR``) adds the row "fleet (before, base)": ``fleet balance`` run from that source with
``PYTHONPATH`` (same interpreter and libraries), right after this tree's in every round.

More fleet rows: ``--fleet-variant NAME=ARGS`` (repeatable) adds a row to the HTTP and end-to-end
tables for ``fleet balance``/``fleet up`` with extra options, e.g.
``--fleet-variant "fleet 2 proc=--proxy-processes 2"``; each such row is also in the CPU ratios.

Prints a table and the ratios fleet/nginx and fleet/HAProxy; writes JSON to bench/results/.
A benchmark, not a test: numbers depend on the machine; ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from fleet.balancer.head import HOT_PATH

HERE = Path(__file__).resolve().parent
LOAD_CORE = "0"
PROXY_CORE = "1"
BOTH_CORES = "0,1"
BASE_ROW = "fleet (before, base)"  # --base-src: an older fleet's src/, measured in the same run
PURE_ROW = "fleet (pure Python)"  # this tree with FLEET_PURE_PYTHON=1


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


class Service:
    """A process started by the bench, always ended by it (its whole process group)."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, stdin: bool = False,
                 timeout: float = 15.0, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.log = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, env=env)
        try:
            wait_port(port, timeout)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{name} did not start: {Path(self.log.name).read_text()[-2000:]}")

    # Which processes of the tree count as the proxy (None: all of them). ``fleet up`` sets it
    # to leave the workers out: the end-to-end table charges the proxy with its own CPU only.
    counts: Callable[[psutil.Process], bool] | None = None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the (counted) process tree so far (nginx: master + worker)."""
        try:
            root = psutil.Process(self.proc.pid)
            total = 0.0
            for process in [root, *root.children(recursive=True)]:
                try:
                    if self.counts is not None and not self.counts(process):
                        continue
                    times = process.cpu_times()
                except psutil.Error:
                    continue  # a child that has just exited
                total += times.user + times.system
            return total
        except psutil.Error:
            return 0.0

    def rss(self) -> int:
        """Resident memory of the process tree (nginx: master + worker)."""
        try:
            root = psutil.Process(self.proc.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.log.close()


def nginx_backends(ports: list[int], workdir: Path) -> Service:
    listens = "\n".join(f"    listen 127.0.0.1:{port} backlog=4096;" for port in ports)
    conf = workdir / "backends.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {workdir}/backends.pid;
error_log {workdir}/backends.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  server {{
{listens}
    location / {{ return 200 "hello\\n"; }}
  }}
}}
""")
    return Service("backends", pinned(LOAD_CORE, ["nginx", "-c", str(conf), "-p", str(workdir)]), ports[0], workdir)


def nginx_proxy(port: int, backends: list[int], workdir: Path, name: str = "nginx", pin: bool = True) -> Service:
    servers = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err warn;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream app {{
    least_conn;
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}
}}
""")
    argv = ["nginx", "-c", str(conf), "-p", str(workdir)]
    return Service(name, pinned(PROXY_CORE, argv) if pin else argv, port, workdir)


def haproxy_proxy(port: int, backends: list[int], workdir: Path, name: str = "haproxy") -> Service:
    servers = "\n".join(f"  server s{i} 127.0.0.1:{b}" for i, b in enumerate(backends))
    conf = workdir / f"{name}.cfg"
    conf.write_text(f"""global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  default_backend app
backend app
  balance leastconn
{servers}
""")
    return Service(name, pinned(PROXY_CORE, ["haproxy", "-db", "-f", str(conf)]), port, workdir)


def fleet_proxy(port: int, backends: list[int], workdir: Path, name: str = "fleet", *extra: str,
                core: str = PROXY_CORE, src: str | None = None, pure: bool = False) -> Service:
    """``fleet balance`` from this tree, or with ``src`` from an older fleet's ``src/`` on
    ``PYTHONPATH`` (as bench/ab_cpu.py runs a base; the same interpreter and libraries);
    ``pure``: with ``FLEET_PURE_PYTHON=1`` (no compiled hot path)."""
    targets = [f"127.0.0.1:{b}" for b in backends]
    argv = [sys.executable, "-m", "fleet", "balance", *targets, "--port", str(port), *extra]
    return Service(name, pinned(core, argv), port, workdir, env=fleet_env(src, pure))


def fleet_env(src: str | None = None, pure: bool = False) -> dict[str, str]:
    """The environment of a fleet the bench starts: this tree's fleet (whatever PYTHONPATH
    names here), or ``src`` on ``PYTHONPATH``; compiled hot path unless ``pure``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLEET_PURE_PYTHON")}
    if src is not None:
        env["PYTHONPATH"] = src
    if pure:
        env["FLEET_PURE_PYTHON"] = "1"
    return env


def is_fleet_worker(process: psutil.Process) -> bool:
    """A process ``fleet up`` runs the app in (``python -m fleet.worker ...``), or one of its children."""
    try:
        for candidate in [process, *process.parents()]:
            if "fleet.worker" in " ".join(candidate.cmdline()):
                return True
    except psutil.Error:
        return False
    return False


def fleet_up(port: int, base_port: int, workdir: Path, name: str, *extra: str) -> Service:
    """``fleet up examples/tornado_hello.py -n 2`` on its own core (workers inherit the pinning:
    the other core is the load generator's, so both setups share the same two cores alike)."""
    argv = [sys.executable, "-m", "fleet", "up", str(HERE.parent / "examples" / "tornado_hello.py"), "-n", "2",
            "--port", str(port), "--base-port", str(base_port), "--name", f"bench-{name}-{port}", *extra]
    service = Service(name, argv, port, workdir, timeout=60)
    service.counts = lambda process: not is_fleet_worker(process)
    return service


def fleet_workers(base_port: int, workdir: Path) -> Service:
    """The same two Tornado workers without fleet's proxy, for nginx to front."""
    argv = [sys.executable, "-m", "fleet", "up", str(HERE.parent / "examples" / "tornado_hello.py"), "-n", "2",
            "--no-proxy", "--base-port", str(base_port), "--name", f"bench-workers-{base_port}"]
    service = Service("workers", argv, base_port, workdir, timeout=60)
    wait_port(base_port + 1, timeout=60)
    return service


class Scraper:
    """Scrapes /metrics every second while a round runs, as Prometheus would."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop_event = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as response:
                response.read()
            self.scrapes += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@dataclass
class HttpResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    seconds: float = 0.0
    cpu_us_per_request: float = 0.0  # the proxy's user+system CPU over the run / requests
    cpu_busy: float = 0.0  # the proxy's CPU seconds / wall seconds (1.0: one core saturated)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, duration: float, connections: int) -> HttpResult:
    argv = pinned(LOAD_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                              f"http://127.0.0.1:{port}/"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)\b", out)
    requests = int(done.group(1)) if done else 0
    seconds = _ms(done.group(2), done.group(3)) / 1000 if done else 0.0
    percentiles = {m.group(1): _ms(m.group(2), m.group(3))
                   for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return HttpResult(rps, percentiles.get("50", 0.0), percentiles.get("99", 0.0), errors, requests, seconds)


def measured_wrk(service: Service | None, port: int, duration: float, connections: int) -> HttpResult:
    """``wrk`` with the proxy's CPU time (user + system, whole process tree) read before and
    after: CPU per request survives a machine shared with other work, requests/s does not."""
    before = service.cpu_seconds() if service is not None else 0.0
    result = wrk(port, duration, connections)
    if service is not None and result.requests:
        cpu = service.cpu_seconds() - before
        result.cpu_us_per_request = cpu / result.requests * 1e6
        result.cpu_busy = cpu / result.seconds if result.seconds else 0.0
    return result


@dataclass
class Row:
    name: str
    rounds: list[HttpResult] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.rounds)


def bench_http(args: argparse.Namespace, workdir: Path) -> dict[str, Row]:
    backend_ports = free_ports(3)
    backends = nginx_backends(backend_ports, workdir)
    rows: dict[str, Row] = {}
    try:
        starters: list[tuple[str, Callable[[int], Service]]] = [
            ("nginx", lambda p: nginx_proxy(p, backend_ports, workdir)),
            ("haproxy", lambda p: haproxy_proxy(p, backend_ports, workdir)),
            ("fleet", lambda p: fleet_proxy(p, backend_ports, workdir, "fleet")),
        ]
        if args.base_src:
            # The older fleet (--base-src) in the same run, right after this tree's: before and after.
            starters.append((BASE_ROW, lambda p: fleet_proxy(p, backend_ports, workdir, "fleet-base",
                                                             src=args.base_src)))
        if not args.skip_pure:
            # This tree without its compiled hot path: what an install without a C compiler gets.
            starters.append((PURE_ROW, lambda p: fleet_proxy(p, backend_ports, workdir, "fleet-pure", pure=True)))
        starters += [
            ("fleet+scrape", lambda p: fleet_proxy(p, backend_ports, workdir, "fleet-scraped")),
        ]
        if not args.skip_multiproc:
            starters += [
                # Two proxy processes on the proxy's one core: what the machinery costs.
                ("fleet x2", lambda p: fleet_proxy(p, backend_ports, workdir, "fleet-x2",
                                                   "--proxy-processes", "2")),
                # Two proxy processes free to use both cores, shared with wrk and the backends.
                ("fleet x2 cores 0-1", lambda p: fleet_proxy(p, backend_ports, workdir, "fleet-x2-both",
                                                             "--proxy-processes", "2", core=BOTH_CORES)),
            ]
        for variant, extra in args.fleet_variant:
            starters.append((variant, lambda p, extra=extra, variant=variant: fleet_proxy(
                p, backend_ports, workdir, variant.replace(" ", "-"), *extra)))
        rows["direct"] = Row("direct")
        for name, _ in starters:
            rows[name] = Row(name)
        for round_number in range(args.rounds):
            rows["direct"].rounds.append(wrk(backend_ports[0], args.duration, args.connections))
            for name, start in starters:
                port = free_ports(1)[0]
                service = start(port)
                scraper = Scraper(port) if name == "fleet+scrape" else None
                try:
                    wrk(port, 2, args.connections)  # warm-up: pools filled, caches hot
                    rows[name].rounds.append(measured_wrk(service, port, args.duration, args.connections))
                finally:
                    if scraper is not None:
                        scraper.stop()
                    service.stop()
            print(f"round {round_number + 1}/{args.rounds}: " + ", ".join(
                f"{n} {r.rounds[-1].requests_per_second:,.0f}/s"
                + (f" {r.rounds[-1].cpu_us_per_request:.1f} µs CPU/req" if r.rounds[-1].cpu_us_per_request else "")
                for n, r in rows.items()), flush=True)
    finally:
        backends.stop()
    return rows


def bench_websocket(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, float]]:
    backend_ports = free_ports(3)
    echo = Service("ws-echo", pinned(LOAD_CORE, [sys.executable, str(HERE / "ws_tools.py"), "serve",
                                                 *map(str, backend_ports)]), backend_ports[0], workdir)
    results: dict[str, dict[str, float]] = {}
    try:
        for name, start in (("nginx", nginx_proxy), ("haproxy", haproxy_proxy), ("fleet", fleet_proxy)):
            rates = []
            per_connection = 0.0
            for _ in range(args.rounds):
                port = free_ports(1)[0]
                service = start(port, backend_ports, workdir, f"{name}-ws")  # type: ignore[operator]
                try:
                    out = subprocess.run(pinned(LOAD_CORE, [sys.executable, str(HERE / "ws_tools.py"), "load",
                                                            f"127.0.0.1:{port}", "--seconds", str(args.duration)]),
                                         capture_output=True, text=True, check=True, timeout=args.duration + 60)
                    rates.append(json.loads(out.stdout)["messages_per_second"])
                    if not per_connection:
                        per_connection = idle_websocket_memory(service, port, args.idle_websockets)
                finally:
                    service.stop()
            results[name] = {"messages_per_second": statistics.median(rates),
                             "idle_rss_per_websocket_bytes": per_connection}
            print(f"websocket {name}: {results[name]['messages_per_second']:,.0f} msg/s, "
                  f"{per_connection / 1024:.1f} KiB per idle websocket", flush=True)
    finally:
        echo.stop()
    return results


def bench_e2e(args: argparse.Namespace, workdir: Path) -> dict[str, Row]:
    """Real Tornado workers: fleet's proxy against nginx least_conn in front of the same workers."""
    rows: dict[str, Row] = {"nginx → fleet up --no-proxy": Row("nginx"), "fleet up": Row("fleet")}
    for variant, _ in args.fleet_variant:
        rows[f"fleet up ({variant})"] = Row(variant)
    for round_number in range(args.rounds):
        base = free_ports(1)[0]
        while not all(port_free(base + i) for i in range(2)):
            base = free_ports(1)[0]
        workers = fleet_workers(base, workdir)
        try:
            port = free_ports(1)[0]
            # Not pinned, like fleet up (whose workers would inherit a pinning): the proxy and the
            # two workers share the machine's cores the same way in both setups.
            service = nginx_proxy(port, [base, base + 1], workdir, "nginx-e2e", pin=False)
            try:
                wrk(port, 2, args.connections)
                rows["nginx → fleet up --no-proxy"].rounds.append(
                    measured_wrk(service, port, args.duration, args.connections))
            finally:
                service.stop()
        finally:
            workers.stop()
        setups: list[tuple[str, tuple[str, ...]]] = [("fleet up", ())]
        setups += [(f"fleet up ({variant})", tuple(extra)) for variant, extra in args.fleet_variant]
        for name, extra in setups:
            port = free_ports(1)[0]
            base = free_ports(1)[0]
            while not all(port_free(base + i) for i in range(2)):
                base = free_ports(1)[0]
            service = fleet_up(port, base, workdir, "fleet-up", *extra)
            try:
                wait_port(base + 1, timeout=60)
                wrk(port, 2, args.connections)
                rows[name].rounds.append(measured_wrk(service, port, args.duration, args.connections))
            finally:
                service.stop()
        print(f"e2e round {round_number + 1}/{args.rounds}: " + ", ".join(
            f"{n} {r.rounds[-1].requests_per_second:,.0f}/s {r.rounds[-1].cpu_us_per_request:.1f} µs CPU/req"
            for n, r in rows.items()), flush=True)
    return rows


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def idle_websocket_memory(service: Service, port: int, count: int) -> float:
    time.sleep(0.5)
    before = service.rss()
    holder = subprocess.Popen([sys.executable, str(HERE / "ws_tools.py"), "hold", f"127.0.0.1:{port}",
                               "--connections", str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        line = holder.stdout.readline() if holder.stdout else ""
        if not line.startswith("open"):
            raise RuntimeError(f"could not open {count} websockets: {line!r}")
        time.sleep(1.0)
        after = service.rss()
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait(timeout=60)
    return (after - before) / count


def report_e2e(e2e: dict[str, Row], args: argparse.Namespace) -> list[str]:
    lines = ["", f"End to end, Tornado workers (examples/tornado_hello.py, 2 workers), wrk -t1 -c{args.connections}, "
                 f"{args.duration:g} s x {args.rounds} rounds (median); proxy CPU excludes the workers:", "",
             "| setup | requests/s | proxy CPU µs/request | proxy CPU busy | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in e2e.items():
        lines.append(f"| {name} | {row.median('requests_per_second'):,.0f} | {row.median('cpu_us_per_request'):.1f} | "
                     f"{row.median('cpu_busy'):.0%} | {row.median('p50_ms'):.2f} | {row.median('p99_ms'):.2f} | "
                     f"{sum(r.errors for r in row.rounds)} |")
    nginx = e2e["nginx → fleet up --no-proxy"]
    for name, row in e2e.items():
        if row is nginx:
            continue
        lines.append(f"{name}/nginx: requests/s {row.median('requests_per_second') / nginx.median('requests_per_second'):.2f}, "
                     f"proxy CPU per request {row.median('cpu_us_per_request') / nginx.median('cpu_us_per_request'):.2f}")
    return lines


def report(http: dict[str, Row], ws: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [f"HTTP keep-alive GET, wrk -t1 -c{args.connections}, {args.duration:g} s x {args.rounds} rounds (median):",
             "", "| target | requests/s | proxy CPU µs/request | proxy CPU busy | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in http.items():
        cpu = f"{row.median('cpu_us_per_request'):.1f}" if name != "direct" else "-"
        busy = f"{row.median('cpu_busy'):.0%}" if name != "direct" else "-"
        lines.append(f"| {name} | {row.median('requests_per_second'):,.0f} | {cpu} | {busy} | "
                     f"{row.median('p50_ms'):.2f} | {row.median('p99_ms'):.2f} | {sum(r.errors for r in row.rounds)} |")
    fleet = http["fleet"].median("requests_per_second")

    def per_round(other: str) -> str:
        ratios = [f.requests_per_second / o.requests_per_second
                  for f, o in zip(http["fleet"].rounds, http[other].rounds)]
        return ", ".join(f"{r:.2f}" for r in ratios)

    lines += ["", f"fleet/nginx   = {fleet / http['nginx'].median('requests_per_second'):.2f} "
                  f"(per round: {per_round('nginx')})",
              f"fleet/haproxy = {fleet / http['haproxy'].median('requests_per_second'):.2f} "
              f"(per round: {per_round('haproxy')})",
              f"fleet with /metrics scraped every 1 s / fleet = "
              f"{http['fleet+scrape'].median('requests_per_second') / fleet:.2f}",
              "(proxy CPU busy: its CPU seconds / wall seconds over the run; near 100% means the proxy "
              "was saturated on its core, so requests/s is its ceiling and CPU/request its cost at full load)"]
    if BASE_ROW in http:
        base_cpu, cpu = http[BASE_ROW].median("cpu_us_per_request"), http["fleet"].median("cpu_us_per_request")
        lines.append(f"CPU per request fleet / {BASE_ROW} = {cpu / base_cpu:.3f} ({base_cpu:.1f} -> {cpu:.1f} µs; "
                     "per round: " + ", ".join(f"{f.cpu_us_per_request / b.cpu_us_per_request:.3f}"
                                               for f, b in zip(http["fleet"].rounds, http[BASE_ROW].rounds)
                                               if b.cpu_us_per_request) + f"; base: {args.base_src})")
    if PURE_ROW in http:
        pure_cpu, cpu = http[PURE_ROW].median("cpu_us_per_request"), http["fleet"].median("cpu_us_per_request")
        lines.append(f"CPU per request fleet / {PURE_ROW} = {cpu / pure_cpu:.3f} ({pure_cpu:.1f} -> {cpu:.1f} µs: "
                     f"the compiled hot path, {HOT_PATH})")
    nginx_cpu = http["nginx"].median("cpu_us_per_request")
    haproxy_cpu = http["haproxy"].median("cpu_us_per_request")
    for name, row in http.items():
        if name.startswith("fleet") and nginx_cpu and haproxy_cpu:
            cpu = row.median("cpu_us_per_request")
            lines.append(f"CPU per request {name}/nginx = {cpu / nginx_cpu:.2f}, {name}/haproxy = {cpu / haproxy_cpu:.2f} "
                         f"(per round vs nginx: " + ", ".join(
                             f"{f.cpu_us_per_request / n.cpu_us_per_request:.2f}"
                             for f, n in zip(row.rounds, http["nginx"].rounds) if n.cpu_us_per_request) + ")")
    if ws:
        lines += ["", f"WebSocket echo relay, 50 connections x 16 frames in flight; idle memory with "
                      f"{args.idle_websockets} open:", "",
                  "| proxy | messages/s | RSS per idle WebSocket |", "|---|---:|---:|"]
        for name, values in ws.items():
            lines.append(f"| {name} | {values['messages_per_second']:,.0f} | "
                         f"{values['idle_rss_per_websocket_bytes'] / 1024:.1f} KiB |")
        lines += ["", f"fleet/nginx websocket = {ws['fleet']['messages_per_second'] / ws['nginx']['messages_per_second']:.2f}",
                  f"fleet/haproxy websocket = {ws['fleet']['messages_per_second'] / ws['haproxy']['messages_per_second']:.2f}"]
    return "\n".join(lines)


def fleet_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=ARGS`` of --fleet-variant: a row name and the extra fleet options."""
    name, sep, options = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=ARGS, e.g. 'fleet 2 proc=--proxy-processes 2', got {text!r}")
    return name.strip(), options.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--idle-websockets", type=int, default=5000)
    parser.add_argument("--skip-websocket", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-multiproc", action="store_true",
                        help="no rows for fleet balance --proxy-processes 2")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end Tornado table")
    parser.add_argument("--skip-pure", action="store_true",
                        help=f"no row '{PURE_ROW}' (this tree's fleet balance with FLEET_PURE_PYTHON=1)")
    parser.add_argument("--base-src", metavar="PATH",
                        help="src/ of an older fleet (git archive COMMIT src | tar -x -C DIR; then DIR/src): "
                             f"adds the row '{BASE_ROW}', its fleet balance run with PYTHONPATH=PATH")
    parser.add_argument("--fleet-variant", action="append", default=[], type=fleet_variant, metavar="NAME=ARGS",
                        help="one more fleet row with extra options, e.g. 'fleet 3 proc=--proxy-processes 3'")
    args = parser.parse_args()
    if args.base_src and not (Path(args.base_src) / "fleet" / "__init__.py").is_file():
        sys.exit(f"--base-src {args.base_src}: no fleet package there (expected {args.base_src}/fleet/__init__.py; "
                 "make it with: mkdir -p DIR && git archive COMMIT src | tar -x -C DIR, then --base-src DIR/src)")
    missing = [tool for tool in ("nginx", "haproxy", "wrk") if not shutil.which(tool)]
    if missing:
        sys.exit(f"bench needs {', '.join(missing)} (Debian: apt-get install nginx-light haproxy wrk)")
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        workdir = Path(tmp)
        http = {} if args.skip_http else bench_http(args, workdir)
        ws = {} if args.skip_websocket else bench_websocket(args, workdir)
        e2e = {} if args.skip_e2e else bench_e2e(args, workdir)
    text = report(http, ws, args) if http else (json.dumps(ws, indent=2) if ws else "")
    if e2e:
        text += "\n" + "\n".join(report_e2e(e2e, args))
    print("\n" + text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"{stamp}.md").write_text(text + "\n")
    (results / f"{stamp}.json").write_text(json.dumps({
        "http": {n: [r.__dict__ for r in row.rounds] for n, row in http.items()}, "websocket": ws,
        "e2e": {n: [r.__dict__ for r in row.rounds] for n, row in e2e.items()},
        "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
