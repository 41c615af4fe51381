"""Instructions per request of ``fleet balance`` under ``valgrind --tool=callgrind``: the figure
that stays put on a machine shared with other work (CPU time and requests/s do not).

    python bench/callgrind_ir.py                               # this tree
    python bench/callgrind_ir.py --base-src /tmp/fleet-base/src  # an older fleet (git archive)
    python bench/callgrind_ir.py -- --proxy-processes 2          # every process of the proxy
    python bench/callgrind_ir.py --group-of-one                  # the --proxy-processes machinery, one process

The proxy runs under callgrind in front of three nginx ``return 200`` backends; a client sends
``--warmup`` keep-alive GETs (pools filled, caches hot), the counters are zeroed, then exactly
``--requests`` more GETs go through ``--connections`` connections (one request in flight on
each, as wrk does), and the instructions counted are divided by the requests. With
``--proxy-processes N`` (or ``--group-of-one``) the proxy processes, the spare and the master
run under callgrind too (``--trace-children``), and every one of them is zeroed and counted. Keep
``--connections`` the same between the figures you compare: more connections per event-loop
pass make each request cheaper.

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil  # noqa: E402

import mp_cost  # noqa: E402  (GROUP_OF_ONE)
import run as bench  # noqa: E402  (bench/run.py: services, ports)


async def _one_connection(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()  # what wrk sends
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200") or match is None:
                raise RuntimeError(f"unexpected response head: {head[:200]!r}")
            await reader.readexactly(int(match.group(1)))
    finally:
        writer.close()


async def load(port: int, requests: int, connections: int) -> None:
    share, rest = divmod(requests, connections)
    await asyncio.gather(*(_one_connection(port, share + (1 if i < rest else 0)) for i in range(connections)))


def control(*args: str) -> str:
    return subprocess.run(["callgrind_control", *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def instructions(path: Path) -> int:
    """The ``summary:``/``totals:`` Ir of one callgrind dump."""
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {path}")
    return int(match.group(1))


def tree(pid: int) -> list[str]:
    """The pids of the proxy under valgrind and of its children (proxy processes, spare)."""
    root = psutil.Process(pid)
    return [str(p.pid) for p in [root, *root.children(recursive=True)]]


def quiet(pid: int, timeout: float = 180.0) -> None:
    """Wait until the proxy's processes are idle (a spare still importing under valgrind would
    count its start-up in the measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(sum(p.cpu_times()[:2]) for p in map(psutil.Process, map(int, tree(pid))))
        time.sleep(1.0)
        if sum(sum(p.cpu_times()[:2]) for p in map(psutil.Process, map(int, tree(pid)))) - before < 0.1:
            return
    raise RuntimeError(f"the proxy's processes were still busy after {timeout:g} s")


@dataclass
class Counted:
    """Instructions of the master (the pid valgrind started) and of its children (proxy
    processes and the spare), under load and, if asked, per second with no traffic."""

    requests: int
    seconds: float  # wall time of the measured load
    master: int = 0
    children: int = 0
    idle_master_per_s: float = 0.0
    idle_children_per_s: float = 0.0

    def per_request(self) -> float:
        return (self.master + self.children) / self.requests

    def periodic_per_request(self) -> float:
        """What the idle rate (timers, snapshots, pushed routes) accounts for over the load's seconds."""
        return (self.idle_master_per_s + self.idle_children_per_s) * self.seconds / self.requests


def dump_all(pids: list[str], workdir: Path) -> dict[int, int]:
    """Dump every process; instructions by pid since its last zeroing."""
    for stale in workdir.glob("callgrind.out.*"):
        stale.unlink()
    for pid in pids:
        control("--dump", pid)
    dumps = sorted(workdir.glob("callgrind.out.*"))
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    counts: dict[int, int] = {}
    for dump in dumps:
        pid = int(dump.name.split(".")[2])
        counts[pid] = counts.get(pid, 0) + instructions(dump)
    return counts


def measure(src: str | None, requests: int, warmup: int, connections: int, workdir: Path,
            extra: list[str], keep: Path | None = None, group_of_one: bool = False, idle: float = 0.0) -> Counted:
    ports = bench.free_ports(4)
    backends = bench.nginx_backends(ports[:3], workdir)
    out = workdir / "callgrind.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src:
        env["PYTHONPATH"] = src
    else:
        env.pop("PYTHONPATH", None)
    head = ["-c", mp_cost.GROUP_OF_ONE] if group_of_one else ["-m", "fleet"]
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no",
            "--trace-children=yes", sys.executable, *head, "balance", *[f"127.0.0.1:{p}" for p in ports[:3]],
            "--port", str(ports[3]), *extra]
    log = open(workdir / "proxy.log", "w")
    proxy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        bench.wait_port(ports[3], timeout=180)
        deadline = time.monotonic() + 180
        while " balance (pid " not in (workdir / "proxy.log").read_text(errors="replace"):  # every process serves
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fleet balance did not start: {(workdir / 'proxy.log').read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(1.5)  # the prober marks the backends ready
        asyncio.run(load(ports[3], warmup, connections))
        quiet(proxy.pid)
        pids = tree(proxy.pid)
        for pid in pids:
            control("--zero", pid)
        began = time.monotonic()
        asyncio.run(load(ports[3], requests, connections))
        counted = Counted(requests, time.monotonic() - began)
        loaded = dump_all(pids, workdir)
        if keep is not None:
            for dump in workdir.glob("callgrind.out.*"):
                shutil.copy(dump, keep)
        counted.master = loaded.pop(proxy.pid, 0)
        counted.children = sum(loaded.values())
        if idle > 0:
            for pid in pids:
                control("--zero", pid)
            began = time.monotonic()
            time.sleep(idle)
            quiet_counts = dump_all(pids, workdir)
            seconds = time.monotonic() - began
            counted.idle_master_per_s = quiet_counts.pop(proxy.pid, 0) / seconds
            counted.idle_children_per_s = sum(quiet_counts.values()) / seconds
        return counted
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(timeout=30)
        log.close()
        backends.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-src", help="src/ of a fleet version to measure instead of this tree")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--group-of-one", action="store_true",
                        help="the --proxy-processes machinery with one proxy process (master, proxy process, spare)")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="also count this many seconds with no traffic: the periodic work per second, "
                             "taken out of the per-request figure (callgrind's slow rate overweights it)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dump here (for callgrind_annotate)")
    parser.add_argument("proxy_args", nargs="*", help="more `fleet balance` options (after --)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool} (Debian: apt-get install valgrind nginx-light)")
    with tempfile.TemporaryDirectory(prefix="fleet-callgrind-") as tmp:
        counted = measure(args.base_src, args.requests, args.warmup, args.connections, Path(tmp),
                          args.proxy_args, args.keep, args.group_of_one, args.idle)
    label = (args.base_src or "this tree") + (" (group of one)" if args.group_of_one else "") + "".join(
        f" {a}" for a in args.proxy_args)
    print(f"{label}: {counted.per_request():,.0f} instructions per request "
          f"({args.requests} keep-alive GETs over {args.connections} connections, {counted.seconds:.1f} s)")
    if counted.children:
        print(f"  master {counted.master / args.requests:,.0f}, proxy processes and spare "
              f"{counted.children / args.requests:,.0f} per request")
    if args.idle > 0:
        periodic = counted.periodic_per_request()
        print(f"  idle: master {counted.idle_master_per_s:,.0f}, children {counted.idle_children_per_s:,.0f} "
              f"instructions/s; that rate over the load's {counted.seconds:.1f} s is {periodic:,.0f} per request; "
              f"without it {counted.per_request() - periodic:,.0f} per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
