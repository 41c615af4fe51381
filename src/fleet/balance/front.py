"""``fleet balance --resolve NAME:PORT ...``: the front tier in front of several fleets.

The proxy is ``fleet.balancer.Balancer`` with ``routing.HostRouting`` as its affinity rule and
one upstream per host; it sets no cookie of its own (the hosts' ``fleet_affinity=host~worker``
passes through and names the host). Two loops keep its upstreams right:

- DNS: every ``RESOLVE_TICK`` the targets that are due (``dnsplan.Resolution``) are asked again,
  all at once, each bounded (``resolve.ASK_TIMEOUT``);
- health: every ``PROBE_INTERVAL`` each known address is probed (``hostprobe``, bounded).

After each, ``hosts.HostTable.view()`` says what the proxy should hold and ``hosts.changes``
how to get there. A connect error still takes a host out at once between probes (the proxy's
passive health), and a request that reached no host is tried on another.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from typing import Callable

from fleet import __version__
from fleet.balance.dnsplan import Address, Resolution, TTLBounds, wanted
from fleet.balance.hostprobe import probe_host
from fleet.balance.hosts import HostTable, HostView, address_text, changes
from fleet.balance.resolve import ResolveError, make_resolver, resolve
from fleet.balance.routing import HostRouting
from fleet.balancer.server import Balancer
from fleet.balancer.settings import ProxyViews
from fleet.config import Config
from fleet.ports import PortInUseError
from fleet.rules import parse_target
from fleet.supervisor.info import WorkerInfo
from fleet.tasks import cancel_and_wait, supervise

PROBE_INTERVAL = 1.0
RESOLVE_TICK = 0.25


def _say(message: str) -> None:
    print(f"fleet | {message}", flush=True)


class HostFront:
    """The front tier's state: targets, their resolutions, the host table, and the proxy."""

    def __init__(self, balancer: Balancer, targets: tuple[str, ...], static: tuple[Address, ...],
                 resolvers: tuple[tuple[str, int], ...], bounds: TTLBounds,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.balancer = balancer
        self.clock = clock
        self.targets = [(target, *parse_target(target)) for target in targets]
        self.resolutions = [Resolution(target, bounds) for target in targets]
        self.static = frozenset(static)
        self.resolver = make_resolver(resolvers) if targets else None
        self.table = HostTable()
        self.held: dict[str, HostView] = {}
        self.since: dict[str, float] = {}
        self.table.name(self.static)

    async def resolve_due(self) -> None:
        now = self.clock()
        due = [(resolution, name, port) for resolution, (_, name, port) in zip(self.resolutions, self.targets)
               if resolution.due(now)]
        if not due:
            return
        assert self.resolver is not None
        results = await asyncio.gather(*(resolve(self.resolver, name, port) for _, name, port in due),
                                       return_exceptions=True)
        now = self.clock()
        for (resolution, _, _), result in zip(due, results):
            if isinstance(result, ResolveError):
                if resolution.failures == 0:
                    kept = ", ".join(sorted(map(address_text, resolution.last_good))) or "nothing"
                    _say(f"DNS {resolution.target}: {result}; keeping the last good answer ({kept})")
                resolution.failed(str(result), now)
            elif isinstance(result, BaseException):
                raise result
            else:
                was_failing = resolution.failures > 0
                if resolution.answered(result, now) or was_failing and not resolution.failures:
                    found = ", ".join(sorted(map(address_text, resolution.last_good)))
                    _say(f"DNS {resolution.target}: {found} (ttl {result.ttl:g} s)")
                elif resolution.failures == 1:
                    _say(f"DNS {resolution.target}: empty answer; keeping the last good one")
        self.table.name(wanted(self.resolutions, self.static))
        self.apply()

    async def probe_all(self) -> None:
        addresses = list(self.table.addresses)
        results = await asyncio.gather(*(probe_host(ip, port) for ip, port in addresses))
        for address, (ready, host_id) in zip(addresses, results):
            self.table.probed(address, ready, host_id)
        self.apply()

    def apply(self) -> None:
        view = self.table.view()
        for verb, host, state in changes(self.held, view):
            if verb == "remove":
                self.balancer.remove_upstream(host)
                _say(f"host {host} is gone (left DNS and stopped answering)")
                continue
            assert state is not None
            if verb == "add":
                if host in self.held:  # it moved (a pod replaced under the same name): no stale pool
                    self.balancer.remove_upstream(host)
                self.balancer.add_upstream(host, state.address[0], state.address[1], ready=state.ready)
                _say(f"host {host} at {address_text(state.address)} is {'up' if state.ready else 'down'}")
            elif verb == "ready":
                self.balancer.set_ready(host, state.ready)
                _say(f"host {host} at {address_text(state.address)} is {'up' if state.ready else 'down'}")
            else:
                self.balancer.set_draining(host, state.draining)
                if state.draining:
                    _say(f"host {host} left DNS: draining (its sessions stay while it answers)")
            self.since[host] = time.time()
        self.held = view

    async def run_dns(self) -> None:
        while True:
            await self.resolve_due()
            await asyncio.sleep(RESOLVE_TICK)

    async def run_probes(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            await self.probe_all()

    def workers(self) -> list[WorkerInfo]:
        """The hosts as ``/metrics`` and status show workers."""
        return [WorkerInfo(index=i, id=host, port=view.address[1], pid=None,
                           state=("draining" if view.draining else "ready") if view.ready else "exited",
                           started_at=self.since.get(host), restarts=0, crash_looping=False, last_exit=None)
                for i, (host, view) in enumerate(sorted(self.held.items()))]


async def _run(config: Config, static: tuple[Address, ...], targets: tuple[str, ...],
               resolvers: tuple[tuple[str, int], ...], bounds: TTLBounds) -> int:
    views = ProxyViews.of(config)
    # The hosts set the affinity cookie (host~worker); one of the front's own would replace it.
    views = replace(views, frontend=replace(views.frontend, sticky=False), cookie_prefix=None)
    balancer = Balancer(views)
    balancer.context.bokeh = HostRouting()  # before start: every later context copies it
    front = HostFront(balancer, targets, static, resolvers, bounds)
    try:
        await balancer.start()
    except PortInUseError as exc:
        _say(f"error: proxy {exc}")
        return 1
    except OSError as exc:
        _say(f"error: cannot listen on {config.address}:{config.port}: {exc.strerror or exc}")
        return 1
    if not config.no_metrics:
        from fleet import metrics

        registry = metrics.make_registry(balancer.stats, front.workers, lambda: len(front.held))
        balancer.add_local_route(config.metrics_path, metrics.metrics_route(registry))
    if targets:
        await front.resolve_due()
    await front.probe_all()
    scheme = "https" if config.ssl_certfile else "http"
    named = ", ".join([*targets, *map(address_text, static)])
    _say(f"fleet {__version__} balance (pid {os.getpid()}): {scheme}://{config.address}:{balancer.port} -> "
         f"hosts of {named} ({sum(v.ready for v in front.held.values())} up)")
    loops = [asyncio.ensure_future(supervise("host probes", front.run_probes, _say))]
    if targets:
        loops.append(asyncio.ensure_future(supervise("DNS", front.run_dns, _say)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        _say("graceful stop: finishing in-flight requests")
        await balancer.stop_accepting()
        await balancer.drain(config.graceful_timeout)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await cancel_and_wait(loops)
        await balancer.close()
    _say("stopped")
    return 0


def run_hosts(config: Config, static: tuple[Address, ...], targets: tuple[str, ...],
              resolvers: tuple[tuple[str, int], ...], bounds: TTLBounds) -> int:
    """Run the front tier until INT/TERM; return the exit code."""
    from fleet.loop import new_loop
    from fleet.tasks import run_loop

    return run_loop(_run(config, static, targets, resolvers, bounds), new_loop,
                    warn=lambda message: _say(f"warning: {message}"))


__all__ = ["HostFront", "run_hosts"]
