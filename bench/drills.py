"""Failure drills, long versions: the figures behind the README's "Reliability" section.

    python bench/drills.py                      # every drill, default sizes (about 6 minutes)
    python bench/drills.py crash fuzz           # some of them
    python bench/drills.py soak --requests 1000000

The drills are the ones ``tests/test_drills.py`` runs short (and asserts); here they run longer
and report their figures instead of failing:

  crash       kill -9 a random ready worker every second for --crash-seconds (10) while
              --clients (8) keep-alive clients send GETs through ``fleet up tests/apps/backend.py
              -n 3``: requests sent, failed, retried (fleet_retries_total), kills, restarts
  crash-loop  a worker that dies at every start: restart gaps, announced backoff, how fast the
              master answers meanwhile, traffic to the other workers, time to recover
  fuzz        --fuzz-cases (30,000) seeded hostile requests (--seed) through the proxy in front of
              tests/apps/recorder.py: outcomes, refusals, what reached workers, known bugs hit
  resources   --idle (5,000) idle connections + --websockets (2,000) WebSockets held through the
              proxy, then closed, --cycles (5) times: descriptors and RSS at baseline/peak/after
  trust       --trust-cases (5,000) seeded forged forwarding headers, foreign absolute-form
              authorities, hostile Hosts and Origins through the proxy in front of
              tests/apps/header_echo.py: statuses, violations, refused cases that reached a worker
  soak        --requests (1,000,000) keep-alive GETs with wrk through ``fleet balance`` in front of
              three nginx ``return 200`` servers, proxy RSS and descriptors sampled every second

Prints each drill's figures and writes them to bench/results/drills-<time>.json and .md.
A report, not a test: the numbers depend on the machine (they were taken on the 2-core dev box).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import run as bench_run  # noqa: E402  (bench/run.py: nginx backends, pinned cores, services)
import test_drills as drills  # noqa: E402

MIB = 2**20


def with_fleet(app: str, *options: str, workers: int = 3) -> Callable[[Callable[[Any, Path], dict[str, Any]]], dict[str, Any]]:
    """Run ``body(fleet, workdir)`` against a fresh ``fleet up APP`` that is always stopped."""
    def runner(body: Callable[[Any, Path], dict[str, Any]]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="fleet-drill-") as tmp:
            fleet = drills.start(Path(tmp), app, *options, workers=workers)
            with fleet.proc:
                return body(fleet, Path(tmp))
    return runner


def crash(args: argparse.Namespace) -> dict[str, Any]:
    def body(fleet: Any, _: Path) -> dict[str, Any]:
        drill = drills.crash_drill(fleet, seconds=args.crash_seconds, clients=args.clients, seed=args.seed)
        figures = drill.figures()
        figures["verdict"] = "ok" if (drill.load.failed == 0 and drill.restarts_status == drill.kills
                                      and drill.restarts_metric == drill.kills) else "FAILED"
        if drill.load.errors:
            figures["errors"] = drill.load.errors[:5]
        return figures
    return with_fleet(drills.BACKEND)(body)


def crash_loop(args: argparse.Namespace) -> dict[str, Any]:
    def body(fleet: Any, workdir: Path) -> dict[str, Any]:
        drill = drills.crash_loop_drill(fleet, workdir, "g1w2", restarts=args.crash_loop_restarts)
        figures = drill.figures()
        gaps = drill.restart_gaps
        growing = all(later > earlier - 0.3 for earlier, later in zip(gaps, gaps[1:]))
        figures["status --json"] = {k: drill.status_json[k] for k in ("state", "crash_looping", "restarts",
                                                                      "last_exit")}
        figures["fleet_worker_crash_looping"] = drill.crash_looping_metric
        figures["verdict"] = "ok" if (growing and drill.status_json["crash_looping"] and drill.load.failed == 0
                                      and drill.crash_looping_metric.get("w2") == 1) else "FAILED"
        return figures
    return with_fleet(drills.CRASH_ON_MARKER)(body)


def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    def body(fleet: Any, _: Path) -> dict[str, Any]:
        drill = drills.fuzz_drill(fleet, 3, seed=args.seed, count=args.fuzz_cases)
        figures = drill.figures()
        figures["verdict"] = "ok" if not drill.violations and drill.reached_after_refusal == 0 else "FAILED"
        if drill.violations:
            figures["first violations"] = [v[:400] for v in drill.violations[:10]]
        return figures
    return with_fleet(drills.RECORDER, *drills.FUZZ_OPTIONS)(body)


def resources(args: argparse.Namespace) -> dict[str, Any]:
    def body(fleet: Any, _: Path) -> dict[str, Any]:
        drill = drills.resource_drill(fleet, 3, idle=args.idle, websockets=args.websockets, cycles=args.cycles)
        figures = drill.figures()
        base = drill.baseline
        fds_back = all(a.clients == 0 and a.fds - a.to_workers <= base.fds - base.to_workers + drills.FD_SLACK
                       for a in drill.afters)
        flat = len(drill.afters) < 2 or max(a.rss for a in drill.afters[1:]) <= drill.afters[1].rss + drills.RSS_CYCLE_SLACK
        figures["rss after close per cycle MiB"] = [round(a.rss / MIB, 1) for a in drill.afters]
        figures["verdict"] = "ok" if fds_back and flat else "FAILED"
        return figures
    return with_fleet(drills.BACKEND, "--header-timeout", "600", "--client-timeout", "600")(body)


class Sampler:
    """RSS and descriptors of one process every ``interval`` seconds, from a thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, rss, fds)
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self._began, self.process.memory_info().rss,
                                     self.process.num_fds()))
            except psutil.Error:
                return
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wrk_round(port: int, seconds: int, connections: int) -> tuple[int, int]:
    """One wrk run: (requests completed, errors: socket errors + non-2xx/3xx)."""
    argv = bench_run.pinned(bench_run.LOAD_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                                                   f"http://127.0.0.1:{port}/"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return done, errors + (int(non2xx.group(1)) if non2xx else 0)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool)]
    if missing:
        return {"verdict": f"skipped: needs {', '.join(missing)}"}
    with tempfile.TemporaryDirectory(prefix="fleet-soak-") as tmp:
        workdir = Path(tmp)
        ports = bench_run.free_ports(4)
        backends = bench_run.nginx_backends(ports[:3], workdir)
        try:
            proxy = bench_run.fleet_proxy(ports[3], ports[:3], workdir, "fleet-soak")
            try:
                sampler = Sampler(proxy.proc.pid)
                time.sleep(1.0)  # one sample before any request
                requests = errors = 0
                warm_rss = 0
                rounds: list[int] = []
                began = time.monotonic()
                while requests < args.requests:
                    done, failed = wrk_round(ports[3], args.round_seconds, args.connections)
                    requests += done
                    errors += failed
                    rounds.append(done)
                    if not warm_rss:
                        warm_rss = psutil.Process(proxy.proc.pid).memory_info().rss
                    print(f"  soak: {requests:,} requests, {errors} errors, "
                          f"RSS {psutil.Process(proxy.proc.pid).memory_info().rss / MIB:.1f} MiB", flush=True)
                elapsed = time.monotonic() - began
                time.sleep(1.0)
                sampler.stop()
            finally:
                proxy.stop()
        finally:
            backends.stop()
    samples = sampler.samples
    start_rss, end_rss = samples[0][1], samples[-1][1]
    peak_rss = max(s[1] for s in samples)
    figures = {
        "requests": requests, "errors": errors, "seconds": round(elapsed, 1),
        "requests/s": round(requests / elapsed), "rounds": len(rounds),
        "rss idle MiB": round(start_rss / MIB, 1), "rss after first round MiB": round(warm_rss / MIB, 1),
        "rss end MiB": round(end_rss / MIB, 1), "rss peak MiB": round(peak_rss / MIB, 1),
        "fds start/end": [samples[0][2], samples[-1][2]], "samples": len(samples),
    }
    # Flat: after the first round has warmed the proxy, the end is within 2 MiB of it.
    figures["verdict"] = "ok" if errors == 0 and end_rss <= warm_rss + 2 * MIB else "FAILED"
    return figures


def trust(args: argparse.Namespace) -> dict[str, Any]:
    import edge_drill

    def body(fleet: Any, _: Path) -> dict[str, Any]:
        drill = edge_drill.trust_drill(fleet.port, [fleet.base_port + i for i in range(3)],
                                       seed=args.seed, count=args.trust_cases)
        figures = drill.figures()
        figures["verdict"] = "ok" if not drill.violations else "FAILED"
        if drill.violations:
            figures["first violations"] = [v[:400] for v in drill.violations[:10]]
        return figures
    return with_fleet(edge_drill.APP, *edge_drill.TRUST_OPTIONS)(body)


DRILLS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "crash": crash, "crash-loop": crash_loop, "fuzz": fuzz, "resources": resources, "soak": soak,
    "trust": trust,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drills", nargs="*", choices=[[], *DRILLS], default=[], metavar="DRILL",
                        help=f"which drills ({', '.join(DRILLS)}); default all")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--crash-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--crash-loop-restarts", type=int, default=7)
    parser.add_argument("--fuzz-cases", type=int, default=30000)
    parser.add_argument("--trust-cases", type=int, default=5000)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--websockets", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--round-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    chosen = args.drills or list(DRILLS)
    results: dict[str, Any] = {}
    for name in chosen:
        print(f"== {name}", flush=True)
        began = time.monotonic()
        results[name] = DRILLS[name](args)
        results[name]["drill seconds"] = round(time.monotonic() - began, 1)
        print(json.dumps(results[name], indent=2, default=str), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"drills-{stamp}.json").write_text(json.dumps({"args": vars(args), "results": results},
                                                         indent=2, default=str) + "\n")
    lines = [f"Failure drills ({time.strftime('%Y-%m-%d')}, seed {args.seed}):", ""]
    for name, figures in results.items():
        lines.append(f"- {name}: {figures.get('verdict')}")
        lines += [f"  - {key}: {value}" for key, value in figures.items() if key != "verdict"]
    (out / f"drills-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: bench/results/drills-{stamp}.json and .md")
    if any(str(f.get("verdict")).startswith("FAILED") for f in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
