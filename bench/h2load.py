"""h2load (Debian's nghttp2-client) against fleet's TLS port over HTTP/2 and over HTTP/1.1,
and against nginx and HAProxy serving HTTP/2 over TLS in front of the same nginx backends.

    .venv/bin/python bench/h2load.py --rounds 3 --requests 20000

Each round runs every setup once, in turn, so load from other work hits them alike; the
proxy is pinned to one core, h2load and the backends to the other. Printed per setup: the
median requests/s and CPU µs per request of the proxy process (user + system, from /proc),
over ``--clients`` connections with ``--streams`` requests in flight on each (HTTP/1.1: one).
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: services, pinning, CPU accounting)


def certificate(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "bench.crt", workdir / "bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key


def nginx_h2(port: int, backends: list[int], workdir: Path, cert: Path, key: Path) -> bench.Service:
    servers = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    conf = workdir / "nginx-h2.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {workdir}/nginx-h2.pid;
error_log {workdir}/nginx-h2.err warn;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  http2_max_requests 10000000;
  upstream app {{ least_conn;
{servers}
    keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl http2 backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }}
  }}
}}
""")
    return bench.Service("nginx-h2", bench.pinned(bench.PROXY_CORE, ["nginx", "-c", str(conf), "-p", str(workdir)]),
                         port, workdir)


def haproxy_h2(port: int, backends: list[int], workdir: Path, cert: Path, key: Path) -> bench.Service:
    pem = workdir / "haproxy.pem"
    pem.write_text(cert.read_text() + key.read_text())
    servers = "\n".join(f"  server s{i} 127.0.0.1:{b}" for i, b in enumerate(backends))
    conf = workdir / "haproxy-h2.cfg"
    conf.write_text(f"""global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
  option forwardfor
  default_backend app
backend app
  balance leastconn
{servers}
""")
    return bench.Service("haproxy-h2", bench.pinned(bench.PROXY_CORE, ["haproxy", "-db", "-f", str(conf)]), port,
                         workdir)


def h2load(port: int, requests: int, clients: int, streams: int, http1: bool) -> float:
    """Requests/s h2load reports (it fails loudly on any failed request)."""
    argv = ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(1 if http1 else streams),
            *(["--h1"] if http1 else []), f"https://127.0.0.1:{port}/"]
    done = subprocess.run(bench.pinned(bench.LOAD_CORE, argv), capture_output=True, text=True, timeout=600)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", done.stdout)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", done.stdout)
    if rate is None or ok is None or int(ok.group(2)) != 0:
        raise RuntimeError(f"h2load failed:\n{done.stdout}\n{done.stderr}")
    return float(rate.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--skip-others", action="store_true", help="fleet only (no nginx, no HAProxy)")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cert, key = certificate(workdir)
        ports = bench.free_ports(3)
        backends = bench.nginx_backends(ports, workdir)
        tls = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
        setups: list[tuple[str, Callable[[int], bench.Service], bool]] = [
            ("fleet h2", lambda p: bench.fleet_proxy(p, ports, workdir, "fleet-h2", *tls), False),
            ("fleet http/1.1 (TLS)", lambda p: bench.fleet_proxy(p, ports, workdir, "fleet-h1", *tls), True),
        ]
        if not args.skip_others:
            setups += [("nginx h2", lambda p: nginx_h2(p, ports, workdir, cert, key), False),
                       ("haproxy h2", lambda p: haproxy_h2(p, ports, workdir, cert, key), False)]
        try:
            for _ in range(args.rounds):
                for label, start, http1 in setups:
                    port = bench.free_ports(1)[0]
                    service = start(port)
                    try:
                        h2load(port, max(1000, args.requests // 10), args.clients, args.streams, http1)  # warm-up
                        before = service.cpu_seconds()
                        rate = h2load(port, args.requests, args.clients, args.streams, http1)
                        cpu_us = (service.cpu_seconds() - before) / args.requests * 1e6
                        results.setdefault(label, []).append((rate, cpu_us))
                        print(f"{label}: {rate:,.0f} req/s, {cpu_us:.0f} µs CPU per request", flush=True)
                    finally:
                        service.stop()
        finally:
            backends.stop()
    print(f"\nmedians of {args.rounds} rounds, {args.requests} requests, {args.clients} connections, "
          f"{args.streams} streams each (HTTP/1.1: 1):")
    print("| setup | requests/s | CPU µs per request |\n|---|---|---|")
    for label, rows in results.items():
        print(f"| {label} | {statistics.median(r for r, _ in rows):,.0f} | {statistics.median(c for _, c in rows):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
