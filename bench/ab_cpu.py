"""CPU µs per request of ``fleet balance``: an older fleet (A) against this tree (B), alternated
round by round against the same nginx backends, so load from other work hits both alike.

    git archive 22f2ba9 src | tar -x -C /tmp/fleet-base      # the version to compare with
    python bench/ab_cpu.py --base-src /tmp/fleet-base/src --rounds 4

A benchmark, not a test. Prints each round and the medians; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: services, pinning, wrk, CPU accounting)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-src", required=True, help="src/ of the fleet version to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ports = bench.free_ports(3)
        backends = bench.nginx_backends(ports, workdir)
        try:
            for _ in range(args.rounds):
                for label in ("base", "new"):
                    port = bench.free_ports(1)[0]
                    service = bench.fleet_proxy(port, ports, workdir, label,
                                                src=args.base_src if label == "base" else None)
                    try:
                        bench.wrk(port, 2, 50)  # warm-up
                        result = bench.measured_wrk(service, port, args.duration, 50)
                        results[label].append(result.cpu_us_per_request)
                        print(f"{label} {result.requests_per_second:,.0f}/s {result.cpu_us_per_request:.1f} µs "
                              f"busy {result.cpu_busy:.0%}", flush=True)
                    finally:
                        service.stop()
        finally:
            backends.stop()
    base, new = statistics.median(results["base"]), statistics.median(results["new"])
    print(f"median CPU µs per request: base {base:.1f}, new {new:.1f}, ratio {new / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
