"""Where the CPU of a second proxy process goes (``--proxy-processes 2`` against one process).

    python bench/mp_cost.py --rounds 3 --duration 4
    python bench/mp_cost.py --base-src /tmp/fleet-head/src     # also each setup from an older src/

Setups, each on the proxy's one core (core 1; wrk and the nginx backends on core 0, as
``bench/run.py`` pins them), alternated round by round:

- ``1 process``: ``fleet balance`` as it runs by default;
- ``group of 1``: the same through the ``--proxy-processes`` machinery with one proxy process
  (master + one proxy process + the spare, the shared load table, counter snapshots and pushed
  routes): the machinery's cost without splitting the connections;
- ``2 processes``: ``--proxy-processes 2``.

Loads: ``closed`` is ``bench/run.py``'s (``wrk -t1 -c50``: each setup runs as fast as it can);
``paced`` is the same 50 connections each waiting ``--pace-ms`` before its next request, an
offered rate below every setup's ceiling, so every setup serves the same requests/s.

Per setup and load, two wrk runs on the same proxy: the first for CPU time per request (user +
system of every process of the proxy, master apart), the second under ``perf stat`` (software
events and syscall tracepoints, which count whatever the machine's load) for system calls,
event-loop passes (``epoll_wait``) and context switches per request. ``idle`` is the CPU the
proxy's processes spend per second with no traffic (timers, snapshots, pushed routes);
``busy`` is CPU seconds per wall second (near 100%: the proxy's core was saturated).

A benchmark, not a test. Needs nginx, wrk, perf (root, or perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: services, pinning, wrk)

# ``fleet balance`` whose proxy is a ProxyGroup of one process (the CLI starts a group for 2 or more).
GROUP_OF_ONE = ("import sys; from fleet.balancer import standalone; from fleet.balancer.group import ProxyGroup; "
                "standalone.Balancer = lambda config: ProxyGroup(config, 1); sys.argv[0] = 'fleet'; "
                "from fleet.cli import main; main()")
SETUPS: dict[str, list[str]] = {"1 process": [], "group of 1": [], "2 processes": ["--proxy-processes", "2"]}
EVENTS = ("raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait",
          "context-switches", "cpu-migrations")


@dataclass
class Sample:
    requests_per_second: float = 0.0
    cpu_us: float = 0.0  # every process of the proxy, per request
    master_us: float = 0.0
    proxies_user_us: float = 0.0
    proxies_system_us: float = 0.0
    syscalls: float = 0.0  # proxy processes (not the master), per request
    epoll_waits: float = 0.0
    context_switches: float = 0.0
    master_syscalls: float = 0.0


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)
    idle_us_per_s: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(s, name) for s in self.samples)


def start(name: str, setup: str, port: int, backends: list[int], workdir: Path, base_src: str | None) -> bench.Service:
    targets = [f"127.0.0.1:{b}" for b in backends]
    head = [sys.executable, "-c", GROUP_OF_ONE] if setup == "group of 1" else [sys.executable, "-m", "fleet"]
    argv = bench.pinned(bench.PROXY_CORE, [*head, "balance", *targets, "--port", str(port), *SETUPS[setup]])
    return bench.Service(name.replace(" ", "-").replace("(", "").replace(")", ""), argv, port, workdir,
                         env=bench.fleet_env(base_src))


def processes(service: bench.Service) -> tuple[psutil.Process, list[psutil.Process]]:
    root = psutil.Process(service.proc.pid)
    return root, root.children(recursive=True)


def cpu(process: psutil.Process) -> tuple[float, float]:
    try:
        times = process.cpu_times()
        return times.user, times.system
    except psutil.Error:
        return 0.0, 0.0


def pace_script(workdir: Path, pace_ms: float) -> Path:
    path = workdir / "pace.lua"
    path.write_text(f"function delay()\n  return {pace_ms:g}\nend\n")
    return path


def run_wrk(port: int, duration: float, script: Path | None) -> tuple[int, float]:
    """(requests, seconds) of one wrk run, 50 connections, pinned to the load core."""
    argv = ["wrk", "-t1", "-c50", f"-d{max(1, round(duration))}s", *(["-s", str(script)] if script else []),
            f"http://127.0.0.1:{port}/"]
    out = subprocess.run(bench.pinned(bench.LOAD_CORE, argv), capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    import re
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)\b", out)
    if done is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk: {out}")
    return int(done.group(1)), bench._ms(done.group(2), done.group(3)) / 1000


def perf_counts(pids: list[int], workdir: Path, tag: str) -> subprocess.Popen[bytes]:
    out = workdir / f"perf-{tag}.csv"
    return subprocess.Popen(["perf", "stat", "-x,", "-o", str(out), "-e", ",".join(EVENTS),
                             "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_read(proc: subprocess.Popen[bytes], workdir: Path, tag: str) -> dict[str, float]:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    counts: dict[str, float] = {}
    for line in (workdir / f"perf-{tag}.csv").read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] in EVENTS:
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                counts[parts[2]] = 0.0  # <not counted>
    return counts


def measure(service: bench.Service, port: int, duration: float, script: Path | None, workdir: Path) -> Sample:
    root, children = processes(service)
    before = {p.pid: cpu(p) for p in [root, *children]}
    requests, seconds = run_wrk(port, duration, script)
    after = {p.pid: cpu(p) for p in [root, *children]}
    sample = Sample(requests_per_second=requests / seconds)
    for pid, (user, system) in after.items():
        user0, system0 = before.get(pid, (0.0, 0.0))
        if pid == root.pid and children:  # one process: the master is the proxy
            sample.master_us = (user - user0 + system - system0) / requests * 1e6
        else:
            sample.proxies_user_us += (user - user0) / requests * 1e6
            sample.proxies_system_us += (system - system0) / requests * 1e6
    sample.cpu_us = sample.master_us + sample.proxies_user_us + sample.proxies_system_us
    # Second run, counted by perf (tracepoints cost a little CPU: not the run that is timed).
    proxies = [p.pid for p in children] or [root.pid]
    counters = [perf_counts(proxies, workdir, "proxies")]
    if children:
        counters.append(perf_counts([root.pid], workdir, "master"))
    counted, _ = run_wrk(port, duration, script)
    proxy_counts = perf_read(counters[0], workdir, "proxies")
    sample.syscalls = proxy_counts.get("raw_syscalls:sys_enter", 0.0) / counted
    sample.epoll_waits = (proxy_counts.get("syscalls:sys_enter_epoll_wait", 0.0)
                          + proxy_counts.get("syscalls:sys_enter_epoll_pwait", 0.0)) / counted
    sample.context_switches = proxy_counts.get("context-switches", 0.0) / counted
    if children:
        sample.master_syscalls = perf_read(counters[1], workdir, "master").get("raw_syscalls:sys_enter", 0.0) / counted
    return sample


def idle_cpu(service: bench.Service, seconds: float, workdir: Path) -> float:
    """CPU µs per second of every process of the proxy with no traffic (perf's task-clock:
    psutil's clock ticks are 10 ms, too coarse for this)."""
    root, children = processes(service)
    out = workdir / "perf-idle.csv"
    subprocess.run(["perf", "stat", "-x,", "-o", str(out), "-e", "task-clock",
                    "-p", ",".join(str(p.pid) for p in [root, *children]), "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 30)
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("task-clock"):
            return float(parts[0]) * 1000 / seconds  # msec -> µs per second
    raise RuntimeError(f"no task-clock in {out.read_text()}")


def report(cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> str:
    lines = [f"wrk -t1 -c50, {args.duration:g} s per measurement, median of {args.rounds} rounds; proxy on core "
             f"{bench.PROXY_CORE}, wrk and backends on core {bench.LOAD_CORE}; paced: {args.pace_ms:g} ms "
             "between a connection's requests", "",
             "| load | setup | requests/s | busy | CPU µs/req | master µs/req | proxies user µs/req | proxies sys µs/req "
             "| syscalls/req | epoll_wait/req | req per epoll_wait | ctx switches/req | idle CPU µs/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (load, name), cell in cells.items():
        waits = cell.median("epoll_waits")
        busy = statistics.median(s.cpu_us * s.requests_per_second / 1e6 for s in cell.samples)
        lines.append(f"| {load} | {name} | {cell.median('requests_per_second'):,.0f} | {busy:.0%} | {cell.median('cpu_us'):.1f} | "
                     f"{cell.median('master_us'):.2f} | {cell.median('proxies_user_us'):.1f} | "
                     f"{cell.median('proxies_system_us'):.1f} | {cell.median('syscalls'):.2f} | {waits:.3f} | "
                     f"{1 / waits if waits else 0:.1f} | {cell.median('context_switches'):.3f} | "
                     f"{statistics.median(cell.idle_us_per_s) if cell.idle_us_per_s else 0:,.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--pace-ms", type=float, default=8.0, help="paced load: wait between a connection's requests")
    parser.add_argument("--loads", default="closed,paced", help="closed, paced or both (comma-separated)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of: {', '.join(SETUPS)}")
    parser.add_argument("--base-src", help="src/ of an older fleet: --base-setups also run from it, as 'NAME (base)'")
    parser.add_argument("--base-setups", default="2 processes", help="comma-separated setups run from --base-src")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    setups = [s.strip() for s in args.setups.split(",")]
    loads = [s.strip() for s in args.loads.split(",")]
    unknown = [s for s in setups if s not in SETUPS] + [lo for lo in loads if lo not in ("closed", "paced")]
    based = [s.strip() for s in args.base_setups.split(",")] if args.base_src else []
    unknown += [s for s in based if s not in SETUPS]
    if unknown:
        sys.exit(f"unknown setup or load: {', '.join(unknown)}")
    runs = [(s, None) for s in setups] + [(s, args.base_src) for s in based]
    cells: dict[tuple[str, str], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-mpcost-") as tmp:
        workdir = Path(tmp)
        script = pace_script(workdir, args.pace_ms)
        ports = bench.free_ports(3)
        backends = bench.nginx_backends(ports, workdir)
        try:
            for round_number in range(args.rounds):
                for setup, src in runs:
                    name = f"{setup} (base)" if src else setup
                    port = bench.free_ports(1)[0]
                    service = start(name, setup, port, ports, workdir, src)
                    try:
                        bench.wait_port(port)
                        time.sleep(1.5)  # the prober marks the backends ready; the spare starts
                        idle = idle_cpu(service, args.idle_seconds, workdir)
                        run_wrk(port, 2, None)  # warm-up: pools filled
                        for load in loads:
                            cell = cells.setdefault((load, name), Cell())
                            cell.samples.append(measure(service, port, args.duration,
                                                        script if load == "paced" else None, workdir))
                            cell.idle_us_per_s.append(idle)
                            last = cell.samples[-1]
                            print(f"round {round_number + 1} {load} {name}: {last.requests_per_second:,.0f}/s "
                                  f"{last.cpu_us:.1f} µs/req, {last.syscalls:.2f} syscalls/req, "
                                  f"{last.epoll_waits:.3f} epoll_wait/req, idle {idle:,.0f} µs/s", flush=True)
                    finally:
                        service.stop()
        finally:
            backends.stop()
    text = report(cells, args)
    print("\n" + text)
    results = bench.HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"mp-cost-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
