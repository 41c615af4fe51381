"""``fleet up``: the master process. One event loop running the supervisor, the proxy and the
control socket, and dispatching signals.

Start order is chosen so a failure leaves nothing behind: resolve APP, claim the control
socket path, bind the proxy port (fails fast, before any worker exists), start the workers,
then serve the control socket. Stop order is the reverse, and graceful: stop accepting, drain
in-flight requests, TERM workers, KILL stragglers.

Signals only enqueue (``_signal``); ``_main_loop`` decides:
INT/TERM graceful stop (a second INT stops at once), HUP rolling reload, TTIN/TTOU one worker
more/less.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from fleet import __version__, health
from fleet.appspec import AppError, AppSpec, detect
from fleet.balancer.stats import ProxyStats
from fleet.config import Config
from fleet.control import ControlError, ControlServer, claim
from fleet.control_ops import OperationsControl
from fleet.discovery import default_name, server_socket_path
from fleet.hooks import HookRunner
from fleet.sdnotify import SystemdNotifier
from fleet.logfiles import Rotation
from fleet.logs import RecordingOutput
from fleet.ports import PortInUseError
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.manager import Supervisor, SupervisorError
from fleet.supervisor.process import Output
from fleet.supervisor.usage import tree_cpu_percent, tree_rss
from fleet.tasks import cancel_and_wait, run_loop

# Exit code after a second Ctrl-C (stop at once), like a shell's 128 + SIGINT.
EXIT_FORCED = 130
# How long start-up may take to kill what it had spawned, once a stop interrupts it.
START_ABORT_WAIT = 20.0
MEMORY_CHECK_INTERVAL = 3.0


def _load_balancer_class() -> Any:
    """The built-in proxy, or None while ``fleet.balancer`` has no ``Balancer`` (--no-proxy only)."""
    try:
        from fleet.balancer import Balancer  # type: ignore[attr-defined]
    except ImportError:
        return None
    return Balancer


class Master:
    def __init__(self, config: Config, output: Output | None = None) -> None:
        self.config = config
        self.output = output or Output()
        self.spec: AppSpec | None = None
        self.stats = ProxyStats()
        self.balancer: Any = None
        self.supervisor: Supervisor | None = None
        self.control: ControlServer | None = None
        self._metrics_listener: Any = None
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._upstreams: set[str] = set()
        self._shutting_down = False
        self._operation: asyncio.Task[Any] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.hooks = HookRunner.from_config(config, self.output, lambda: self._shutting_down)  # ops
        self.systemd = SystemdNotifier.from_environ(os.environ, self.output)  # ops: Type=notify

    # -- signals: only enqueue -------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGINT: "int",
            signal.SIGTERM: "term",
            signal.SIGHUP: "hup",
            signal.SIGTTIN: "ttin",
            signal.SIGTTOU: "ttou",
        }
        for sig, event in handlers.items():
            loop.add_signal_handler(sig, self._events.put_nowait, event)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            loop.remove_signal_handler(sig)

    # -- supervisor -> balancer -------------------------------------------------------------
    def _on_change(self, info: WorkerInfo) -> None:
        if self.balancer is None:
            return
        if info.state == "stopped":
            if info.id in self._upstreams and not self._shutting_down:
                self.balancer.remove_upstream(info.id)
                self._upstreams.discard(info.id)
            return
        if info.id not in self._upstreams:
            self.balancer.add_upstream(info.id, "127.0.0.1", info.port, ready=info.ready)
            self._upstreams.add(info.id)
        else:
            self.balancer.set_ready(info.id, info.ready)

    def _load(self, worker_id: str) -> int:
        """What a draining worker still has to finish: in-flight HTTP requests (WebSockets are
        closed by the worker's TERM and reconnect through the proxy to a ready worker)."""
        return int(self.balancer.active_requests(worker_id)) if self.balancer is not None else 0

    # -- start -----------------------------------------------------------------------------
    def _error(self, message: str) -> int:
        self.output.write_line(f"fleet | error: {message}")
        return 1

    async def run(self) -> int:
        config = self.config
        if config.cmd is None:
            assert config.app is not None
            try:
                self.spec = detect(config.app)
            except AppError as exc:
                return self._error(str(exc))
        try:
            control_path = server_socket_path(config.control_socket, config.name, config.port)  # ops
            claim(control_path)
        except ControlError as exc:
            return self._error(str(exc))

        self._install_signals()
        try:
            return await self._run_started(control_path)
        finally:
            self._remove_signals()
            await self.hooks.close()  # ops: no hook outlives fleet
            self.systemd.close()

    async def _run_started(self, control_path: str) -> int:
        config = self.config
        if not config.no_proxy:
            balancer_class = _load_balancer_class()
            if balancer_class is None:
                return self._error("the built-in proxy is not available in this build; use --no-proxy")
            self.balancer = balancer_class(config, self.stats)
            try:
                await self.balancer.start()  # binds now: a taken port fails before any worker runs
            except PortInUseError as exc:
                return self._error(f"proxy {exc}")
            except OSError as exc:
                await self.balancer.close()
                return self._error(f"cannot listen on {config.address}:{config.port}: {exc.strerror or exc}")
            for index in range(config.workers):
                self.balancer.add_upstream(config.worker_id(index), "127.0.0.1", config.worker_port(index))
                self._upstreams.add(config.worker_id(index))

        self.supervisor = Supervisor(config, self.spec, on_change=self.hooks.wrap(self._on_change),
                                     load=self._load if self.balancer is not None else None,
                                     output=self.output)
        if self.balancer is not None:  # ops: /_fleet/health/live and /_fleet/health/ready
            supervisor = self.supervisor
            for path, handler in health.routes(supervisor.workers, lambda: supervisor.desired).items():
                self.balancer.add_local_route(path, handler)
        try:
            await self._start_metrics()  # binds --metrics-port now, before any worker runs
        except (PortInUseError, OSError) as exc:
            await self._close_proxy()
            return self._error(str(exc))
        self._banner()
        started = asyncio.ensure_future(self.supervisor.start())
        if await self._stop_requested_before(started):
            # Stopped while starting: nothing serves yet, so there is nothing to drain. start()
            # kills what it had spawned when cancelled; that clean-up is not interrupted, but
            # it is not waited for without bound either.
            if await cancel_and_wait([started], START_ABORT_WAIT, recancel=False):
                self.output.fleet("start-up did not end in time; killing the workers")
            await self.supervisor.kill_now()
            await self._close_proxy()
            self.output.fleet("stopped before all workers were ready")
            return 0
        try:
            started.result()
        except SupervisorError as exc:
            await self._close_proxy()
            return self._error(str(exc))

        try:
            self.control = ControlServer(control_path, OperationsControl(  # ops: info, logs
                self, self._control, config.name or default_name(config.port, os.getpid())))
            await self.control.start()
        except (ControlError, OSError) as exc:
            await self.supervisor.kill_now()
            await self._close_all()
            return self._error(str(exc))
        self._ready_banner()
        self.systemd.ready(f"{config.workers} workers ready")  # ops: systemd Type=notify
        self._spawn_background(self.systemd.watchdog())
        if config.max_memory:
            self._spawn_background(self._watch_memory())
        return await self._main_loop()

    async def _stop_requested_before(self, started: asyncio.Future[None]) -> bool:
        """Wait for ``started``; True if INT/TERM came first. Other signals wait for the start."""
        while not started.done():
            getter: asyncio.Future[str] = asyncio.ensure_future(self._events.get())
            pending: list[asyncio.Future[Any]] = [started, getter]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                await cancel_and_wait([getter])
                break
            event = getter.result()
            if event in {"int", "term"}:
                return True
            self.output.fleet(f"SIG{event.upper()} ignored while fleet is starting")
        return False

    def _banner(self) -> None:
        config = self.config
        what = f"--cmd {config.cmd!r}" if config.cmd else f"{config.app} ({self.spec.kind.value if self.spec else '?'} app)"
        last = config.worker_port(config.workers - 1)
        ports = f"port {config.base_port}" if config.workers == 1 else f"ports {config.base_port}-{last}"
        self.output.fleet(f"fleet {__version__} (pid {os.getpid()}): {config.workers} workers of {what} on {ports}")

    def _public_url(self) -> str:
        path = self.spec.url_path if self.spec is not None else "/"
        port = self.balancer.port if self.balancer is not None else self.config.port
        scheme = "https" if self.config.ssl_certfile else "http"
        host = "localhost" if self.config.address in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.config.address
        return f"{scheme}://{host}:{port}{path}"

    def _ready_banner(self) -> None:
        if self.balancer is not None:
            self.output.fleet(f"ready: open {self._public_url()}")
            if self.balancer.redirect_port is not None:
                self.output.fleet(f"http://{self.config.address}:{self.balancer.redirect_port} redirects to https")
        else:
            self.output.fleet(f"ready (no proxy): workers on {self.config.address}:{self.config.base_port}"
                              f"-{self.config.worker_port(self.config.workers - 1)}")
        self.output.fleet(f"control socket {self.control.path if self.control else '-'}: "
                          f"fleet status | reload | scale N | down")

    async def _start_metrics(self) -> None:
        """Wire ``fleet.metrics`` (when present): on the proxy port, or on --metrics-port."""
        config = self.config
        if config.no_metrics:
            return
        try:
            from fleet import metrics
        except ImportError:
            return
        assert self.supervisor is not None
        supervisor = self.supervisor
        registry = metrics.make_registry(self.stats if self.balancer is not None else None,
                                         supervisor.workers, lambda: supervisor.desired)
        if config.metrics_port is not None:
            self._metrics_listener = await metrics.serve_separately(
                registry, config.address, config.metrics_port, config.metrics_path)
        elif self.balancer is not None and hasattr(self.balancer, "add_local_route"):
            self.balancer.add_local_route(config.metrics_path, metrics.metrics_route(registry))

    # -- the loop --------------------------------------------------------------------------
    def _spawn_background(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _main_loop(self) -> int:
        stopping: asyncio.Task[None] | None = None
        while True:
            getter = asyncio.ensure_future(self._events.get())
            waiting: set[asyncio.Future[Any]] = {getter}
            if stopping is not None:
                waiting.add(stopping)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stopping is not None and stopping.done():
                await cancel_and_wait([getter])
                stopping.result()
                return 0
            event = getter.result()
            if event in {"int", "term", "down"}:
                if stopping is None:
                    self.output.fleet(f"graceful stop ({'SIGINT' if event == 'int' else 'SIGTERM' if event == 'term' else 'fleet down'}); "
                                      f"press Ctrl-C again to stop at once")
                    stopping = asyncio.ensure_future(self._graceful_stop())
                elif event == "int":
                    self.output.fleet("second SIGINT: stopping at once")
                    await cancel_and_wait([stopping])
                    await self._stop_now()
                    return EXIT_FORCED
            elif stopping is None and event == "hup":
                self._start_operation(self._reload())
            elif stopping is None and event in {"ttin", "ttou"}:
                assert self.supervisor is not None
                target = self.supervisor.desired + (1 if event == "ttin" else -1)
                if target < 1:
                    self.output.fleet("SIGTTOU ignored: fleet keeps at least 1 worker")
                else:
                    self._start_operation(self._scale(target))

    def _start_operation(self, coro: Any) -> None:
        self._spawn_background(self._report_errors(coro))

    async def _report_errors(self, coro: Any) -> Any:
        try:
            return await coro
        except SupervisorError as exc:
            self.output.fleet(f"error: {exc}")
            return None

    async def _reload(self) -> str:
        assert self.supervisor is not None
        if self.balancer is not None:
            tls = self.balancer.reload_tls()  # first: a rotated certificate matters at once
            if tls is not None:
                self.output.fleet(tls)
        self.output.fleet("rolling reload")
        self.systemd.reloading()  # ops: systemd Type=notify
        try:
            count = await self.supervisor.reload()
        finally:
            self.systemd.ready("reload done")
        self.output.fleet(f"reloaded {count} workers")
        return f"reloaded {count} workers"

    async def _scale(self, workers: int) -> str:
        assert self.supervisor is not None
        await self.supervisor.scale(workers)
        ready = sum(1 for w in self.supervisor.workers() if w.ready)
        return f"scaled to {workers} workers ({ready} ready)"

    async def _graceful_stop(self) -> None:
        config = self.config
        self._shutting_down = True
        self.systemd.stopping()  # ops: systemd Type=notify
        deadline = time.monotonic() + config.graceful_timeout
        if self.balancer is not None:
            await self.balancer.stop_accepting()
            await self.balancer.drain(config.graceful_timeout)
        assert self.supervisor is not None
        await self.supervisor.stop(max(deadline - time.monotonic(), min(5.0, config.graceful_timeout)))
        await self._close_all()
        self.output.fleet("stopped")

    async def _stop_now(self) -> None:
        self._shutting_down = True
        if self.supervisor is not None:
            await self.supervisor.kill_now()
        await self._close_all()

    async def _close_proxy(self) -> None:
        if self._metrics_listener is not None:
            self._metrics_listener.close()
            self._metrics_listener = None
        if self.balancer is not None:
            await self.balancer.close()

    async def _close_all(self) -> None:
        await cancel_and_wait(list(self._background))
        if self.control is not None:
            await self.control.close()
        await self._close_proxy()

    # -- control socket --------------------------------------------------------------------
    async def _control(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.supervisor is not None
        if command == "status":
            return await self._status()
        if self._shutting_down:
            raise ControlError("fleet is stopping")
        if command == "reload":
            try:
                return {"ok": True, "message": await self._reload()}
            except SupervisorError as exc:
                raise ControlError(str(exc)) from None
        if command == "scale":
            try:
                workers = int(args["workers"])
            except (KeyError, TypeError, ValueError):
                raise ControlError("scale needs workers: N") from None
            try:
                return {"ok": True, "message": await self._scale(workers)}
            except SupervisorError as exc:
                raise ControlError(str(exc)) from None
        if command == "down":
            self._events.put_nowait("down")
            return {"ok": True, "message": f"stopping fleet (pid {os.getpid()})"}
        raise ControlError(f"unknown command {command!r} (status, reload, scale, down)")

    async def _status(self) -> dict[str, Any]:
        assert self.supervisor is not None
        infos = self.supervisor.workers()
        pids = [info.pid for info in infos if info.pid is not None]
        cpu = await tree_cpu_percent(pids)
        workers = []
        for info in infos:
            row: dict[str, Any] = {
                "id": info.id, "index": info.index, "pid": info.pid, "port": info.port,
                "state": info.state, "started_at": info.started_at, "restarts": info.restarts,
                "crash_looping": info.crash_looping, "last_exit": info.last_exit,
                "next_start_at": info.next_start_at,
                "uptime": (time.time() - info.started_at) if info.started_at else None,
                "connections": None, "requests": None, "cpu_percent": None, "rss": None,
            }
            if self.balancer is not None:
                upstream = self.stats.upstreams.get(info.id)
                row["connections"] = upstream.load if upstream else 0
                row["requests"] = upstream.requests_total if upstream else 0
            if info.pid is not None:
                row["cpu_percent"] = round(cpu.get(info.pid, 0.0), 1)
                row["rss"] = tree_rss(info.pid)
            workers.append(row)
        return {
            "ok": True, "pid": os.getpid(), "time": time.time(), "version": __version__,
            "app": self.config.cmd and f"--cmd {self.config.cmd}" or self.config.app,
            "desired": self.supervisor.desired,
            "proxy": self._public_url() if self.balancer is not None else None,
            "workers": workers,
        }

    # -- --max-memory ----------------------------------------------------------------------
    async def _watch_memory(self) -> None:
        limit = self.config.max_memory
        assert limit and self.supervisor is not None
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL)
            for info in self.supervisor.workers():
                if info.pid is None or not info.ready:
                    continue
                rss = tree_rss(info.pid)
                if rss > limit:
                    await self._report_errors(self.supervisor.restart_worker(
                        info.id, f"its processes use {rss / 2**20:.0f} MiB, more than --max-memory "
                                 f"{limit / 2**20:.0f} MiB"))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_up(config: Config) -> int:
    """Run ``fleet up`` until stopped; return the process exit code."""
    master = Master(config, RecordingOutput(  # ops: fleet logs, --log-json, --log-dir rotation
        as_json=config.log_json, log_rotation=Rotation(config.log_max_size, config.log_keep)))
    return run_loop(master.run(), _new_loop, warn=lambda message: master.output.fleet(f"warning: {message}"))


__all__ = ["Master", "run_up", "EXIT_FORCED"]
