"""``fleet balance HOST:PORT...``: the proxy alone, in front of servers fleet does not run.

Without a supervisor to say which server is ready, a health prober does: every
``PROBE_INTERVAL`` it connects to each server (or GETs ``--health-path`` and wants a 2xx) and
marks it ready or down, logging each change. Passive health still applies between probes:
a connect error takes a server out of rotation at once. SIGHUP reloads the TLS certificate.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from fleet import __version__
from fleet.balancer.group import ProxyGroup
from fleet.balancer.hotpath import hot_path_line
from fleet.balancer.server import Balancer
from fleet.balancer.settings import ProxyViews
from fleet.config import Config
from fleet.cpulimit import proxy_processes
from fleet.ports import PortInUseError
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.probe import probe_once
from fleet.tasks import cancel_and_wait

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0


def _say(message: str) -> None:
    print(f"fleet | {message}", flush=True)


class Prober:
    """Keeps each target's readiness in the balancer up to date."""

    def __init__(self, balancer: "Balancer | ProxyGroup", targets: tuple[tuple[str, int], ...], health_path: str | None) -> None:
        self.balancer = balancer
        self.targets = [(target_id(index), host, port) for index, (host, port) in enumerate(targets)]
        self.addresses = {target_id(index): f"{host}:{port}" for index, (host, port) in enumerate(targets)}
        self.health_path = health_path
        self.ready: dict[str, bool] = {}
        self.since: dict[str, float] = {}

    async def round(self) -> None:
        results = await asyncio.gather(*(probe_once(host, port, self.health_path, PROBE_TIMEOUT)
                                         for _, host, port in self.targets))
        for (target_id, _, _), ok in zip(self.targets, results):
            if self.ready.get(target_id) != ok:
                if target_id in self.ready or not ok:
                    _say(f"{target_id} ({self.addresses[target_id]}) is {'up' if ok else 'down'}")
                self.ready[target_id] = ok
                self.since[target_id] = time.time()
                self.balancer.set_ready(target_id, ok)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            await self.round()

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(index=i, id=target_id, port=port, pid=None,
                           state="ready" if self.ready.get(target_id) else "exited",
                           started_at=self.since.get(target_id), restarts=0, crash_looping=False,
                           last_exit=None)
                for i, (target_id, _, port) in enumerate(self.targets)]


def target_id(index: int) -> str:
    """The opaque id of the index-th target (``b0``, ``b1``, ... in command-line order): what
    the affinity cookie, status and metrics labels carry, so no client sees a backend address."""
    return f"b{index}"


def split_target(target: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:80`` for IPv6), already validated by the CLI."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


async def _run(config: Config, target_specs: tuple[str, ...]) -> int:
    targets = tuple(split_target(spec) for spec in target_specs)
    processes = proxy_processes(config.proxy_processes, "balance")
    # --proxy-processes: N processes on the port (balancer.group), else the proxy runs here.
    views = ProxyViews.of(config)
    balancer: Balancer | ProxyGroup = ProxyGroup(views, processes) if processes > 1 else Balancer(views)
    for index, (host, port) in enumerate(targets):
        balancer.add_upstream(target_id(index), host, port, ready=False)
    try:
        await balancer.start()
    except PortInUseError as exc:
        _say(f"error: proxy {exc}")
        return 1
    except OSError as exc:
        _say(f"error: cannot listen on {config.address}:{config.port}: {exc.strerror or exc}")
        return 1
    prober = Prober(balancer, targets, config.health_path)
    listener = None
    if not config.no_metrics:
        from fleet import metrics

        registry = metrics.make_registry(balancer.stats, prober.workers, lambda: len(targets))
        if config.metrics_port is not None:
            try:
                listener = await metrics.serve_separately(registry, config.address, config.metrics_port,
                                                          config.metrics_path, allow=config.metrics_allow,
                                                          trusted_proxies=config.trusted_proxies())
            except OSError as exc:
                await balancer.close()
                _say(f"error: {exc}")
                return 1
        else:
            balancer.add_local_route(config.metrics_path, metrics.metrics_route(registry))
    await prober.round()
    up = sum(prober.ready.values())
    scheme = "https" if config.ssl_certfile else "http"
    if balancer.redirect_port is not None:
        _say(f"http://{config.address}:{balancer.redirect_port} redirects to https")
    _say(f"fleet {__version__} balance (pid {os.getpid()}): {scheme}://{config.address}:{balancer.port} -> "
         f"{', '.join(f'{t} {prober.addresses[t]}' for t, _, _ in prober.targets)} ({up} up)")
    _say(hot_path_line())
    probing = asyncio.ensure_future(prober.run())

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _say(balancer.reload_tls() or "SIGHUP: nothing to reload (no TLS)"))
    try:
        await stop.wait()
        _say("graceful stop: finishing in-flight requests (Ctrl-C again stops at once)")
        stop.clear()
        await balancer.stop_accepting()
        drain = asyncio.ensure_future(balancer.drain(config.graceful_timeout))
        second_stop = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([drain, second_stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([drain, second_stop])
    finally:
        for sig in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await cancel_and_wait([probing])
        if listener is not None:
            listener.close()
        await balancer.close()
    _say("stopped")
    return 0


def run_balance(config: Config, targets: tuple[str, ...]) -> int:
    """Run ``fleet balance`` until INT/TERM; return the exit code."""
    from fleet.loop import new_loop
    from fleet.tasks import run_loop

    return run_loop(_run(config, targets), new_loop, warn=lambda message: _say(f"warning: {message}"))
