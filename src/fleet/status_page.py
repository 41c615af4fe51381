"""The status page at ``/_fleet/``: a sampler in the master and the routes that serve the page.

Costs are paid once per ``INTERVAL``, not per page view: the master samples every worker's
process tree (one walk of the process table for all of them) and the proxy's counters, adds a
point to a bounded history and renders ``/_fleet/status.json``. A page view reads those bytes
(and the proxy caches every built-in answer for a second on top). The page polls the JSON
instead of holding a server-sent-events stream open: each poll is an ordinary keep-alive
request, so the proxy's header and idle timeouts and its per-IP limits apply unchanged, and a
forgotten tab holds no connection fleet has to time out.

The page's HTML, script and style sheet are package data (``fleet/assets``), served from
memory under a strict ``Content-Security-Policy`` (nothing inline, nothing from elsewhere).
Same access rule as ``/metrics``: a client outside ``--metrics-allow`` gets 404.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterable

import psutil

from fleet import __version__, health
from fleet.balancer.stats import ProxyStats
from fleet.status_history import ExitLog, History, Traffic, Usage, document, rates, totals, worker_row
from fleet.supervisor.info import WorkerChange, WorkerInfo
from fleet.supervisor.usage import trees_usage

if TYPE_CHECKING:
    from fleet.config.sections import WorkerSettings
    from fleet.supervisor.manager import Supervisor

INTERVAL = 2.0
PAGE_PATH = "/_fleet/"
JSON_PATH = "/_fleet/status.json"
Answer = tuple[int, str, bytes]
Headers = tuple[tuple[str, str], ...]
Route = tuple[Callable[[], Answer], Headers]

# The page loads only its own script, style sheet and icon, and fetches only status.json.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS: Headers = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
ASSETS = {  # path under /_fleet/ -> (file in fleet/assets, content type)
    "": ("status.html", "text/html; charset=utf-8"),
    "status.js": ("status.js", "text/javascript; charset=utf-8"),
    "status.css": ("status.css", "text/css; charset=utf-8"),
    "icon.svg": ("icon.svg", "image/svg+xml"),
}


class StatusBoard:
    """Samples the fleet once per ``interval`` and keeps the rendered ``status.json``."""

    def __init__(self, workers: Callable[[], list[WorkerInfo]], desired: Callable[[], int],
                 generation: Callable[[], int], stats: ProxyStats | None, meta: dict[str, Any],
                 interval: float = INTERVAL) -> None:
        self._workers = workers
        self._desired = desired
        self._generation = generation
        self._stats = stats
        self.meta = meta
        self.interval = interval
        self.history = History()
        self.exits = ExitLog()
        self._master = psutil.Process(os.getpid())
        self._before: tuple[float, dict[int, float], dict[str, float], float] | None = None
        self.latest = b""
        self.sample_seconds = 0.0  # what the last sample cost (CPU of the master's loop)
        self.failed_samples = 0

    @classmethod
    def of(cls, workers: "WorkerSettings", supervisor: "Supervisor", stats: ProxyStats | None, name: str,
           proxy_url: str | None) -> "StatusBoard":
        """The board of ``fleet up``'s master (``stats``: None with ``--no-proxy``)."""
        return cls(supervisor.workers, lambda: supervisor.desired, lambda: supervisor.generation, stats,
                   meta_of(app_label(workers.cmd, workers.apps()), name, proxy_url))

    def observe(self, change: WorkerChange) -> None:
        """A supervisor observer: exits are caught as they happen, not at the next sample."""
        self.exits.observe(change, time.time())

    def sample(self) -> bytes:
        started = time.process_time()
        now = time.time()
        infos = self._workers()
        pids = [info.pid for info in infos if info.pid is not None]
        usage = {pid: Usage(*reading) for pid, reading in trees_usage(pids).items()}
        cpu_now = {pid: u.cpu_seconds for pid, u in usage.items()}
        traffic: dict[str, Traffic] = {}
        requests_now: dict[str, float] = {}
        if self._stats is not None:
            for upstream_id, upstream in self._stats.upstreams.items():
                traffic[upstream_id] = Traffic(upstream.requests_total, upstream.active_requests, upstream.websockets)
                requests_now[upstream_id] = upstream.requests_total
        master_cpu = sum(self._master.cpu_times()[:2])
        cpu_rate: dict[Any, float] = {}
        request_rate: dict[Any, float] = {}
        master_percent = None
        first = self._before is None
        if self._before is not None:
            then, cpu_then, requests_then, master_then = self._before
            elapsed = now - then
            # Only pids seen at both samples: a new process's whole life is not one interval.
            cpu_rate = rates({p: c for p, c in cpu_then.items() if p in cpu_now},
                             {p: c for p, c in cpu_now.items() if p in cpu_then}, elapsed)
            request_rate = rates(requests_then, requests_now, elapsed)
            master_percent = max(0.0, (master_cpu - master_then) / elapsed * 100.0) if elapsed > 0 else None
        self._before = (now, cpu_now, requests_now, master_cpu)
        rows = []
        for info in infos:
            reading = usage.get(info.pid) if info.pid is not None else None
            percent = cpu_rate.get(info.pid) if info.pid is not None else None
            proxied = self._stats is not None
            rows.append(worker_row(
                info, now, reading, None if percent is None else percent * 100.0,
                traffic.get(info.id, Traffic(0, 0, 0)) if proxied else None,
                None if first or not proxied else request_rate.get(info.id, 0.0)))
        self.history.add(totals(now, rows, self._stats is not None))
        meta = dict(self.meta)
        meta.update(now=round(now, 1), desired=self._desired(), generation=self._generation(),
                    master={"pid": self._master.pid, "cpu_percent": None if master_percent is None
                            else round(master_percent, 1), "rss": self._master.memory_info().rss})
        self.latest = document(meta, rows, self.history, self.exits, self.interval)
        self.sample_seconds = time.process_time() - started
        return self.latest

    async def run(self) -> None:
        """Sample until cancelled (the master's background task, supervised by the runner).
        A sample that fails for want of a resource (EMFILE while the proxy sheds load) is
        skipped, not fatal: the next interval tries again and the page carries on."""
        while True:
            try:
                self.sample()
            except OSError:
                self.failed_samples += 1
            await asyncio.sleep(self.interval)

    def json_answer(self) -> Answer:
        return 200, "application/json", self.latest or self.sample()


def app_label(cmd: str | None, apps: Iterable[str]) -> str:
    """What the page calls the app: file names, or the program of a ``--cmd``. Never the whole
    command line: the page is open to the private networks by default, and a command line may
    carry a password someone put there."""
    if cmd:
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = cmd.split()
        program = next((w for w in words if w not in ("exec", "env", "nice", "nohup") and "=" not in w), "")
        return f"--cmd {os.path.basename(program)}".rstrip()
    return " ".join(os.path.basename(os.path.normpath(path)) for path in apps)


def meta_of(app: str, name: str, proxy: str | None) -> dict[str, Any]:
    return {"app": app, "name": name, "version": __version__, "pid": os.getpid(), "started_at": round(time.time(), 1),
            "proxy": proxy}


def asset(name: str) -> bytes:
    return resources.files("fleet").joinpath("assets", name).read_bytes()


def fleet_routes(board: StatusBoard, supervisor: "Supervisor") -> dict[str, Route]:
    """Everything under ``/_fleet/``: the health probes and the status page."""
    table: dict[str, Route] = {path: (handler, ()) for path, handler in
                               health.routes(supervisor.workers, lambda: supervisor.desired,
                                             supervisor.views.workers.host_id).items()}
    table.update(routes(board))
    return table


def routes(board: StatusBoard) -> dict[str, Route]:
    """The status page's routes (path -> handler, extra headers) for the proxy or the metrics
    listener."""
    table: dict[str, Route] = {}
    for path, (filename, content_type) in ASSETS.items():
        body = asset(filename)
        table[PAGE_PATH + path] = ((lambda body=body, content_type=content_type: (200, content_type, body)),
                                   PAGE_HEADERS)
    table[JSON_PATH] = (board.json_answer, PAGE_HEADERS)
    return table


__all__ = ["CONTENT_SECURITY_POLICY", "INTERVAL", "JSON_PATH", "PAGE_PATH", "StatusBoard", "app_label", "asset", "fleet_routes",
           "meta_of", "routes"]
