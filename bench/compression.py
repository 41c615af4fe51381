"""What compression costs and saves: BokehJS's bundles at each setting, and a worker's text
response through fleet's proxy with each coding a client can ask for.

    python bench/compression.py                  # both parts
    python bench/compression.py --requests 500   # more requests per coding

Part 1 (no fleet): the five bundles a Bokeh page with widgets loads (``bokeh.min.js``,
``-gl``, ``-widgets``, ``-tables``, ``-mathjax``), compressed one shot with gzip, brotli and
zstd at several levels: bytes and CPU ms (process time), the trade-off behind
``balancer.compressor``'s choices. Part 2: ``fleet up tests/apps/compressible.py`` (one worker);
``--requests`` keep-alive GETs of a 64 KiB log-like text body per ``Accept-Encoding`` (none,
gzip, br, zstd): bytes on the wire per response and the proxy's CPU µs per request (fleet's
master process: user + system over the run, divided by the requests).

A benchmark, not a test. CPU figures move with the machine's load: compare within one run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import psutil

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ("bokeh.min.js", "bokeh-gl.min.js", "bokeh-widgets.min.js", "bokeh-tables.min.js", "bokeh-mathjax.min.js")


def bundles() -> list[bytes]:
    import bokeh.util.paths
    js = Path(bokeh.util.paths.bokehjsdir()) / "js"
    return [(js / name).read_bytes() for name in BUNDLES]


def settings() -> list[tuple[str, Callable[[bytes], bytes]]]:
    out: list[tuple[str, Callable[[bytes], bytes]]] = []
    for level in (1, 5, 6, 9):
        def gz(data: bytes, level: int = level) -> bytes:
            c = zlib.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(data) + c.flush()
        out.append((f"gzip -{level}", gz))
    try:
        import brotli
        for quality in (4, 5, 9, 11):
            out.append((f"br q{quality}", lambda data, q=quality: brotli.compress(data, quality=q)))
    except ImportError:
        pass
    try:
        import zstandard
        for level in (3, 9, 19):
            out.append((f"zstd -{level}", lambda data, lv=level: zstandard.ZstdCompressor(level=lv).compress(data)))
    except ImportError:
        pass
    return out


def part1() -> None:
    data = bundles()
    total = sum(map(len, data))
    print(f"BokehJS bundles: {total} bytes plain")
    print(f"{'setting':10} {'bytes':>10} {'ratio':>6} {'CPU ms':>8}")
    for name, fn in settings():
        began = time.process_time()
        size = sum(len(fn(piece)) for piece in data)
        spent = time.process_time() - began
        print(f"{name:10} {size:10d} {size / total:6.3f} {spent * 1000:8.0f}")


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def part2(requests: int) -> None:
    port, base, surge = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", "up", str(ROOT / "tests/apps/compressible.py"), "-n", "1", "--port", str(port),
             "--base-port", str(base), "--surge-base-port", str(surge), "--control-socket", f"{tmp}/s.sock"],
            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "ready: open" in line:
                    break
            master = psutil.Process(proc.pid)
            print(f"\n{requests} GETs of /text?kb=64 (65536 bytes) through fleet's proxy, keep-alive")
            print(f"{'Accept-Encoding':16} {'bytes/response':>15} {'proxy CPU µs/request':>21}")
            for accept in (None, "gzip", "br", "zstd"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                headers = {"Accept-Encoding": accept} if accept else {}
                for _ in range(20):  # warm up
                    conn.request("GET", "/text?kb=64", headers=headers)
                    conn.getresponse().read()
                before = master.cpu_times()
                wire = 0
                for _ in range(requests):
                    conn.request("GET", "/text?kb=64", headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    wire += len(body)
                    if accept is not None:
                        assert response.getheader("Content-Encoding") == accept, response.getheaders()
                after = master.cpu_times()
                conn.close()
                cpu = (after.user + after.system - before.user - before.system) / requests
                print(f"{accept or '(none)':16} {wire // requests:15d} {cpu * 1e6:21.0f}")
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--skip-bundles", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if not args.skip_bundles:
        part1()
    part2(args.requests)


if __name__ == "__main__":
    main()
