"""One proxy process of ``--proxy-processes N``: ``python -m fleet.balancer.child``.

It runs an ordinary ``Balancer`` (every rule of the one-process proxy, unchanged) on its own
``SO_REUSEPORT`` listener, with its workers' gauges in its row of the shared load table
(``balancer.loadtable``). It owns nothing else: the master (``balancer.group``) tells it, over
one inherited unix socket carrying JSON lines, which workers exist and in which state, and
what the built-in routes answer; it tells the master its counters. Messages:

    master -> proxy   config and row (first line, the ProxyViews; a spare process waits for it)   add / ready / draining / remove (a worker)
                      route (a built-in route's latest answer)   bokeh (static roots)
                      settings (a reload)   reload_tls   stop_accepting   drain   close
                      sync (answer when every earlier message is applied)
    proxy -> master   started (port bound) or error   stats (counters, every STATS_INTERVAL,
                      with this process's open connections and requests)   drained   synced

It dies with the master (``PR_SET_PDEATHSIG``, and the control socket's end-of-file).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pickle
import signal
import socket
import sys
from typing import Any

from fleet.balancer import snapshot
from fleet.balancer.loadtable import LoadTable, SharedProxyStats, SharedUpstreamSet
from fleet.balancer.server import Balancer
from fleet.balancer.settings import ProxyViews
from fleet.ports import PortInUseError

STATS_INTERVAL = 0.25  # seconds between counter snapshots sent to the master
LINE_LIMIT = 64 * 1024 * 1024  # a /metrics page pushed by the master fits in one line


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def pack(value: Any) -> str:
    """An object for the other end of a private socketpair (the config, Bokeh static roots)."""
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def unpack(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


class PushedRoute:
    """A built-in route as the master last rendered it (``/metrics`` totals of every process)."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, bytes] = (503, "text/plain; charset=utf-8", b"starting\n")
        self.headers = b""  # extra header lines, as CachedRoute.headers

    def __call__(self) -> tuple[int, str, bytes]:
        return self.answer


class ProxyProcess:
    def __init__(self, balancer: Balancer, stats: SharedProxyStats, writer: asyncio.StreamWriter) -> None:
        self.balancer = balancer
        self.stats = stats
        self.writer = writer
        self.routes: dict[str, PushedRoute] = {}
        self.removed_requests = 0  # relayed to workers since removed: the count stays monotonic

    def report(self) -> dict[str, Any]:
        """The stats message: the counters, and this process's own figures for ``fleet status``."""
        requests = self.removed_requests + sum(u.requests_total for u in self.stats.upstreams.values())
        return {"op": "stats", "stats": snapshot.snapshot(self.stats),
                "process": {"connections": len(self.balancer.context.clients), "requests": requests}}

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(message))

    async def push_stats(self) -> None:
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            current = self.report()
            if current != last:
                self.send(current)
                last = current

    async def handle(self, message: dict[str, Any]) -> bool:
        """Apply one master message; False: stop."""
        op = message["op"]
        balancer = self.balancer
        if op == "add":
            self.stats.columns[message["id"]] = message["column"]
            balancer.add_upstream(message["id"], message["host"], message["port"], ready=message["ready"])
            if message.get("draining"):
                balancer.set_draining(message["id"], True)
        elif op == "ready":
            balancer.set_ready(message["id"], message["ready"])
        elif op == "draining":
            balancer.set_draining(message["id"], message["draining"])
        elif op == "remove":
            balancer.remove_upstream(message["id"])
            removed = self.stats.upstreams.pop(message["id"], None)  # as the one-process master forgets it
            self.removed_requests += removed.requests_total if removed is not None else 0
        elif op == "route":
            route = self.routes.get(message["path"])
            if route is None:
                route = self.routes[message["path"]] = PushedRoute()
                balancer.context.local_routes[message["path"].encode()] = route  # type: ignore[assignment]
            route.answer = (message["status"], message["type"], message["body"].encode("latin-1"))
            route.headers = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                                     for name, value in message.get("headers", ()))
        elif op == "bokeh":
            balancer.serve_bokeh(unpack(message["roots"]))
        elif op == "settings":  # a reload: new connections get these views
            balancer.apply(unpack(message["views"]))
        elif op == "reload_tls":
            balancer.reload_tls()
        elif op == "stop_accepting":
            await balancer.stop_accepting()
        elif op == "drain":
            drained = await balancer.drain(message["timeout"])
            self.send(self.report())
            self.send({"op": "drained", "ok": drained})
        elif op == "sync":
            self.send({"op": "synced", "n": message["n"]})
        elif op == "close":
            return False
        return True


async def _run(control: socket.socket, table: LoadTable, unix_fd: int | None) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=control, limit=LINE_LIMIT)
    first = json.loads(await reader.readline() or b"null")
    if not first or first.get("op") != "config":
        return 2
    views: ProxyViews = unpack(first["config"])
    stats = SharedProxyStats(table, first["row"])
    balancer = Balancer(views, stats, reuse_port=True, upstream_set=SharedUpstreamSet)
    unix = socket.socket(fileno=unix_fd) if unix_fd is not None else None
    try:
        await balancer.start(unix)
    except (PortInUseError, OSError) as exc:
        writer.write(encode({"op": "error", "message": str(exc)}))
        await writer.drain()
        return 1
    process = ProxyProcess(balancer, stats, writer)
    process.send({"op": "started", "pid": os.getpid(), "port": balancer.port,
                  "redirect_port": balancer.redirect_port})
    pusher = asyncio.ensure_future(process.push_stats())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # the master is gone (or closed us): stop serving
            if not await process.handle(json.loads(line)):
                break
    finally:
        pusher.cancel()
        await balancer.close()
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.balancer.child")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--table-fd", type=int, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--unix-fd", type=int)
    args = parser.parse_args(argv)
    # Ctrl-C at a terminal is the master's to handle (it stops us gracefully, by message).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from fleet.loop import new_loop
    from fleet.tasks import run_loop

    control = socket.socket(fileno=args.control_fd)
    table = LoadTable.attach(args.table_fd, args.rows)
    return run_loop(_run(control, table, args.unix_fd), new_loop,
                    warn=lambda message: print(f"fleet proxy {os.getpid()} | warning: {message}", flush=True))


if __name__ == "__main__":
    sys.exit(main())
