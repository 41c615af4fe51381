"""``fleet up``: the master process. One event loop running the supervisor, the proxy and the
control socket, and dispatching signals.

Start order is chosen so a failure leaves nothing behind: resolve APP, claim the control
socket path, start the front (``fleet.front``: binds the proxy port, failing fast, before any
worker exists), start the workers, let the front serve them, then serve the control socket.
A failure at any step undoes them all (``_abort``). Stop order is the reverse, and graceful:
the front stops accepting and drains in-flight requests, TERM workers, KILL stragglers.

Signals only enqueue an ``Event`` (``SIGNAL_EVENTS``); ``_main_loop`` decides:
INT/TERM graceful stop (a second INT stops at once), HUP reload, TTIN/TTOU one worker
more/less. Control commands live in ``fleet.dispatch``, recycling in ``fleet.recycler``.
"""

from __future__ import annotations

import asyncio
import enum
import os
import signal
import time
from typing import Any, Coroutine

from fleet import status_page
from fleet.acme.manager import CertificateManager
from fleet.acme.paths import managed_certificate
from fleet.appspec import AppError, AppSpec, detect_apps
from fleet.bokeh_settings import app_paths
from fleet.config import Config, ConfigError, replace
from fleet.control import ControlError, ControlServer, claim
from fleet.control_ops import OperationsControl
from fleet.discovery import default_name, server_socket_path
from fleet.front.factory import front_for
from fleet.front.interface import Front, FrontError
from fleet.front.noproxy import NoFront
from fleet.frontage import Frontage
from fleet.dispatch import ControlDispatch
from fleet.hooks import HookRunner
from fleet.logfiles import Rotation
from fleet.logs import RecordingOutput
from fleet.loop import new_loop
from fleet.sdnotify import SystemdNotifier
from fleet.ports import PortInUseError
from fleet.supervisor.info import WorkerChange
from fleet.supervisor.manager import Supervisor, SupervisorError
from fleet.supervisor.policy import term_wait
from fleet.supervisor.process import Output
from fleet.supervisor.settings import SupervisorViews
from fleet.tasks import cancel_and_wait, run_loop, supervise
from fleet import recycler
from fleet.config.reloadplan import ReloadPlan, Way
from fleet.config.source import ConfigSource
from fleet.reloading import ConfigReloads, prepare
from fleet.upgrade.adopt import adopt_connections, adopted, prepare_front, take_state
from fleet.upgrade.handover import UpgradeError, Upgrades, check as upgrade_check, handover
from fleet.upgrade.state import StateError, UpgradeState

# Exit code after a second Ctrl-C (stop at once), like a shell's 128 + SIGINT.
EXIT_FORCED = 130
# How long start-up may take to kill what it had spawned, once a stop interrupts it.
START_ABORT_WAIT = 20.0


class Event(enum.Enum):
    INT = "SIGINT"
    TERM = "SIGTERM"
    HUP = "SIGHUP"
    TTIN = "SIGTTIN"
    TTOU = "SIGTTOU"
    USR2 = "SIGUSR2"
    DOWN = "fleet down"


SIGNAL_EVENTS: dict[signal.Signals, Event] = {
    signal.SIGINT: Event.INT,
    signal.SIGTERM: Event.TERM,
    signal.SIGHUP: Event.HUP,
    signal.SIGTTIN: Event.TTIN,
    signal.SIGTTOU: Event.TTOU,
    signal.SIGUSR2: Event.USR2,
}
STOP_EVENTS = frozenset({Event.INT, Event.TERM, Event.DOWN})


class Master(Frontage):
    def __init__(self, config: Config, output: Output | None = None, source: ConfigSource | None = None) -> None:
        self.config = config
        self.config_reloads = ConfigReloads(source)  # fleet reload re-reads the configuration
        self.output = output or Output()
        self.spec: AppSpec | None = None  # the first APP (the only one unless all are Bokeh apps)
        self.specs: tuple[AppSpec, ...] = ()
        self.front: Front = NoFront()  # until run() starts the one the config asks for
        self.acme: CertificateManager | None = None  # --domain
        self.supervisor: Supervisor | None = None
        self.control: ControlServer | None = None
        self.status_board: status_page.StatusBoard | None = None  # ops: /_fleet/
        self._fleet_routes: dict[str, status_page.Route] = {}
        self._metrics_listener: Any = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._recycler: asyncio.Task[Any] | None = None
        self._reloading = asyncio.Lock()  # SIGHUP and fleet reload: one plan applied at a time
        self.hooks = HookRunner.from_config(config.hooks, self.output, lambda: self.stopping)  # ops
        self.systemd = SystemdNotifier.from_environ(os.environ, self.output)  # ops: Type=notify
        self.upgrades = Upgrades()  # fleet upgrade, SIGUSR2 (fleet.upgrade)
        self.fleet_started_at = self.upgrades.code_started_at  # this fleet's first start
        self.inherited: UpgradeState | None = None  # what the master before an upgrade handed over

    # -- signals: only enqueue -------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, event in SIGNAL_EVENTS.items():
            loop.add_signal_handler(sig, self._events.put_nowait, event)
        # After fleet upgrade's exec they were held (fleet.upgrade.handover): delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_EVENTS)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNAL_EVENTS:
            loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        self._events.put_nowait(Event.DOWN)

    # -- supervisor -> front ----------------------------------------------------------------
    def _on_change(self, change: WorkerChange) -> None:
        # The first observer: the proxy learns of a ready worker before that worker's hook runs.
        self.front.worker_changed(change.after)

    def slot_of(self, worker_id: str) -> str:
        return self.front.slot_of(worker_id)

    # -- start -----------------------------------------------------------------------------
    def _error(self, message: str) -> int:
        self.output.write_line(f"fleet | error: {message}")
        return 1

    async def run(self) -> int:
        config = self.config
        if config.cmd is None:
            assert config.app is not None
            try:
                paths = app_paths(config.supervisor, config.bokeh)
                self.specs = detect_apps(paths)
                self.spec = self.specs[0]
                # --glob is expanded once: every worker, now or after a restart, serves the same apps.
                self.config = config = replace(config, app=paths[0], extra_apps=tuple(paths[1:]), glob=False)
            except (AppError, ConfigError) as exc:
                return self._error(str(exc))
        # --domain: TLS from the state directory's certificate
        self.config = config = replace(config, **managed_certificate(config.acme, config.ssl_certfile, os.environ))
        try:
            control_path = server_socket_path(config.control_socket, config.name, config.port)  # ops
            self.inherited = take_state()
            if self.inherited is None:
                claim(control_path)
        except (ControlError, StateError) as exc:
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
        try:
            self._prepare_acme()  # a state directory others may read: refused before anything binds
        except (RuntimeError, ValueError) as exc:  # StateError, no acme library, a bad FLEET_ACME_*
            return self._error(str(exc))
        front = self.front = front_for(config, control_path, self.output)
        state = self.inherited
        if state is not None:
            prepare_front(front.proxy, state, config.unix_socket)  # type: ignore[attr-defined]
        try:
            await front.start()  # binds now: a taken port fails before any worker runs
        except FrontError as exc:
            return self._error(str(exc))
        if self.acme is not None:  # orders while the workers start: HTTP-01 is answered already
            self._spawn_background(supervise("the ACME certificate manager", self.acme.run, self.output.fleet))
        self._serve_bokeh_static()
        supervisor = self.supervisor = Supervisor(
            SupervisorViews.of(config), self.spec, observers=(self._on_change, self.hooks.observe),
            wait_idle=front.wait_idle if front.routes else None, output=self.output)
        front.attach(supervisor)
        self._add_fleet_routes(supervisor)
        if self.status_board is not None:
            supervisor.observe(self.status_board.observe)
        try:
            await self._start_metrics()  # binds --metrics-port now, before any worker runs
        except (PortInUseError, OSError) as exc:
            return await self._abort(str(exc))
        self._banner()
        started = asyncio.ensure_future(supervisor.start() if state is None else adopted(self, state))
        if await self._stop_requested_before(started):
            # Stopped while starting: nothing serves yet, so there is nothing to drain. start()
            # kills what it had spawned when cancelled; that clean-up is not interrupted, but
            # it is not waited for without bound either.
            if await cancel_and_wait([started], START_ABORT_WAIT, recancel=False):
                self.output.fleet("start-up did not end in time; killing the workers")
            await self._abort(None)
            self.output.fleet("stopped before all workers were ready")
            return 0
        try:
            started.result()
            await front.serve()  # a managed nginx/HAProxy starts in front of the ready workers
            self.control = ControlServer(control_path, OperationsControl(  # ops: info, logs
                self, ControlDispatch(self), config.name or default_name(config.port, os.getpid())))
            if state is None or state.control_fd is None:
                await self.control.start()
            else:
                self.control.adopt(state.control_fd)
                self.output.fleet(f"upgrade: {await adopt_connections(self, state)}")
        except (SupervisorError, FrontError, ControlError, OSError) as exc:
            return await self._abort(str(exc))
        self._ready_banner()
        self.systemd.ready(f"{config.workers} workers ready")  # ops: systemd Type=notify
        # Long-lived tasks are supervised: a failure is logged and the task started again.
        self._spawn_background(supervise("the systemd watchdog", self.systemd.watchdog, self.output.fleet))
        if self.status_board is not None:
            self._spawn_background(supervise("the status page's sampler", self.status_board.run,
                                             self.output.fleet))
        self._start_recycler()
        return await self._main_loop()

    def _prepare_acme(self) -> None:
        config = self.config
        if not config.acme.domain:
            return
        async def certificate_changed() -> str | None:
            return self.front.reload_tls()  # every proxy process, or the managed nginx/HAProxy

        self.acme = CertificateManager(config.acme, config.https_redirect_port is not None, certificate_changed,
                                       self.output.fleet, os.environ)
        self.acme.prepare()

    def _start_recycler(self) -> None:
        """At start, and again after a reload that changed the thresholds."""
        if self._recycler is not None:
            self._recycler.cancel()
            self._recycler = None
        recycling, supervisor = self.config.recycling, self.supervisor
        if recycler.enabled(recycling) and supervisor is not None:
            self._recycler = self._spawn_background(supervise(
                "the recycler", lambda: recycler.watch(supervisor, recycling, self._requests_of), self.output.fleet))

    def _requests_of(self, worker_id: str) -> int | None:
        stats = self.front.stats
        upstream = stats.upstreams.get(worker_id) if stats is not None else None
        return upstream.requests_total if upstream is not None else None

    async def _stop_requested_before(self, started: asyncio.Future[None]) -> bool:
        """Wait for ``started``; True if INT/TERM came first. Other signals wait for the start."""
        while not started.done():
            getter: asyncio.Future[Event] = asyncio.ensure_future(self._events.get())
            pending: list[asyncio.Future[Any]] = [started, getter]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                await cancel_and_wait([getter])
                break
            event = getter.result()
            if event in STOP_EVENTS:
                return True
            self.output.fleet(f"{event.value} ignored while fleet is starting")
        return False

    # -- the loop --------------------------------------------------------------------------
    def _spawn_background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _main_loop(self) -> int:
        stop_task: asyncio.Task[None] | None = None
        while True:
            getter = asyncio.ensure_future(self._events.get())
            waiting: set[asyncio.Future[Any]] = {getter}
            if stop_task is not None:
                waiting.add(stop_task)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stop_task is not None and stop_task.done():
                await cancel_and_wait([getter])
                stop_task.result()
                return 0
            event = getter.result()
            if event in STOP_EVENTS:
                if stop_task is None:
                    self.output.fleet(f"graceful stop ({event.value}); press Ctrl-C again to stop at once")
                    stop_task = asyncio.ensure_future(self._graceful_stop())
                elif event is Event.INT:
                    self.output.fleet("second SIGINT: stopping at once")
                    await cancel_and_wait([stop_task])
                    await self._stop_now()
                    return EXIT_FORCED
            elif stop_task is None and event is Event.HUP:
                self._spawn_background(self._report_errors(self.reload()))
            elif stop_task is None and event in (Event.TTIN, Event.TTOU):
                assert self.supervisor is not None
                target = self.supervisor.desired + (1 if event is Event.TTIN else -1)
                if target < 1:
                    self.output.fleet("SIGTTOU ignored: fleet keeps at least 1 worker")
                else:
                    self._spawn_background(self._report_errors(self.scale(target)))
            elif stop_task is None and event is Event.USR2:
                self._spawn_background(self._report_errors(self.upgrade()))

    async def _report_errors(self, coro: Coroutine[Any, Any, str]) -> str | None:
        try:
            return await coro
        except SupervisorError as exc:
            self.output.fleet(f"error: {exc}")
            return None

    async def reload(self) -> str:
        """Re-read the configuration, apply each change (in place, then the new generation every
        reload starts, then scaling), and say what changed and how."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> str:
        assert self.supervisor is not None
        reloads = self.config_reloads
        try:
            plan = prepare(reloads.source, self.config)
            refusal = await self.front.check(plan.effective)  # nginx -t, haproxy -c
            if refusal is not None:
                raise ConfigError(refusal)
        except ConfigError as exc:
            reloads.record("refused", [str(exc)])
            self.output.fleet(f"reload refused, nothing changed: {exc}")
            raise SupervisorError(f"configuration refused, nothing changed: {exc}") from None
        lines = [f"configuration: {line}" for line in plan.lines()]
        for line in lines:
            self.output.fleet(line)
        lines += await self._apply_in_place(plan)
        tls = self.front.reload_tls()  # first: a rotated certificate matters at once
        if tls is not None:
            self.output.fleet(tls)
        self.output.fleet("reload")
        self.systemd.reloading()  # ops: systemd Type=notify
        try:
            lines.append(await self.supervisor.reload())
            if plan.needs(Way.SCALE) and self.config.workers != self.supervisor.desired:
                lines.append(await self.scale(self.config.workers))
        except SupervisorError as exc:  # the old generation serves on; in-place changes stay
            reloads.record("partial", [*lines, f"error: {exc}"])
            raise
        finally:
            self.systemd.ready("reload done")
        self._serve_bokeh_static()
        await self.front.settle()  # answer once every proxy process knows the new routing
        reloads.record(plan.result, lines)
        return "\n".join(lines)

    async def _apply_in_place(self, plan: ReloadPlan) -> list[str]:
        """Every subsystem gets the new settings before the new generation starts."""
        before, config = self.config, plan.effective
        self.config = config
        assert self.supervisor is not None
        self.supervisor.views = SupervisorViews.of(config)  # read at each start, drain and stop
        hooks = config.hooks
        self.hooks.commands = {event: cmd for event, cmd in {
            "ready": hooks.on_ready, "exit": hooks.on_exit, "crash-loop": hooks.on_crash_loop}.items() if cmd}
        self.hooks.timeout = hooks.hook_timeout
        if isinstance(self.output, RecordingOutput):
            self.output.as_json = config.log_json
        self.output.log_rotation = Rotation(config.log_max_size, config.log_keep)
        if before.recycling != config.recycling:
            self._start_recycler()
        self._renew_metrics(config)
        note = await self.front.apply(config)
        return [note] if note else []

    async def upgrade(self) -> str:
        """Run the installed fleet's code in this process (``fleet.upgrade``); returns only
        when it did not happen (the old fleet serves on)."""
        try:
            verdict = await upgrade_check(self)
        except UpgradeError as exc:
            raise SupervisorError(str(exc)) from None
        await handover(self, verdict)
        raise SupervisorError(f"upgrade not done: {self.upgrades.status()['last']['message']}")

    async def upgrade_checked(self) -> str:
        """``fleet upgrade``: the preflight answers (``UpgradeError``); the handover follows
        in the background, once the answer is out."""
        verdict = await upgrade_check(self)
        self._spawn_background(handover(self, verdict))
        return f"the installed fleet {verdict.version} passed its preflight: handing over"

    async def scale(self, workers: int) -> str:
        assert self.supervisor is not None
        refused = self.front.check_scale(workers)
        if refused:
            raise SupervisorError(refused)
        await self.supervisor.scale(workers)
        await self.front.settle()
        ready = sum(1 for w in self.supervisor.workers() if w.ready and w.current)
        return f"scaled to {workers} workers ({ready} ready)"

    async def _graceful_stop(self) -> None:
        config = self.config
        self.stopping = True
        self.systemd.stopping()  # ops: systemd Type=notify
        deadline = time.monotonic() + config.graceful_timeout
        await self.front.stop_accepting()
        await self.front.drain(config.graceful_timeout)  # in-flight requests finish
        assert self.supervisor is not None
        await self.supervisor.stop(term_wait(deadline, time.monotonic(), config.graceful_timeout))
        await self._close_all()
        self.output.fleet("stopped")

    async def _stop_now(self) -> None:
        self.stopping = True
        await self._abort(None)

    async def _abort(self, error: str | None) -> int:
        """Stop at once whatever started (a failed start, a second Ctrl-C); ``error`` for the
        user. Each step is safe when its part never started. The front goes first: a managed
        nginx/HAProxy is owned by the supervisor's watchdog, which ``kill_now`` closes."""
        await self.front.close()
        if self.supervisor is not None:
            await self.supervisor.kill_now()
        await self._close_all()
        return 0 if error is None else self._error(error)

    async def _close_all(self) -> None:
        await cancel_and_wait(list(self._background))
        if self.control is not None:
            await self.control.close()
        if self._metrics_listener is not None:
            self._metrics_listener.close()
            self._metrics_listener = None
        await self.front.close()


def run_up(config: Config, source: ConfigSource | None = None) -> int:
    """Run ``fleet up`` until stopped; return the process exit code. ``source``: where the
    configuration came from, for ``fleet reload``."""
    master = Master(config, RecordingOutput(  # ops: fleet logs, --log-json, --log-dir rotation
        as_json=config.log_json, log_rotation=Rotation(config.log_max_size, config.log_keep)), source)
    return run_loop(master.run(), new_loop, warn=lambda message: master.output.fleet(f"warning: {message}"))


__all__ = ["Master", "run_up", "EXIT_FORCED", "Event", "SIGNAL_EVENTS"]
