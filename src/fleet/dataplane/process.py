"""nginx or HAProxy as a supervised child of the master.

The server runs in the foreground (``nginx -g 'daemon off;'``, ``haproxy -W -db``: HAProxy's
master-worker mode, so a reload keeps the listening sockets and the master's pid) in its own
process group with ``PR_SET_PDEATHSIG`` and fleet's watchdog (``WorkerProcess``), so it never
outlives fleet; its output goes through fleet's output (``haproxy | ...``, ``--log-dir``).

- ``check``: the binary exists and ``nginx -t`` / ``haproxy -c`` accepts the configuration,
  before any worker starts; otherwise a clear error and nothing runs.
- ``start``: spawn and wait until it accepts connections on the public port.
- a crash: the whole group is killed (an nginx master killed with -9 leaves its workers
  holding the port), then it starts again after the workers' ``RestartPolicy`` backoff, with
  a configuration rendered afresh, and ``on_restart`` re-applies run-time state.
- ``stop``: a graceful stop (nginx QUIT, HAProxy USR1: stop listening, finish what is in
  flight) up to the timeout, then SIGKILL of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from typing import Awaitable, Callable

from fleet.config.sections import ProxySettings
from fleet.dataplane.files import DataPlaneError, Layout
from fleet.supervisor.policy import RestartPolicy
from fleet.supervisor.process import LineRelay, Output, WorkerProcess
from fleet.supervisor.reaper import Reaper
from fleet.supervisor.watchdog import Watchdog
from fleet.tasks import cancel_and_wait, with_timeout

BINARIES = {"nginx": "nginx", "haproxy": "haproxy"}
CHECK_TIMEOUT = 30.0
START_TIMEOUT = 15.0
# The graceful-stop signal of each server: stop accepting, let what is in flight finish.
SOFT_STOP = {"nginx": signal.SIGQUIT, "haproxy": signal.SIGUSR1}
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def find_binary(kind: str, search_path: str = SEARCH_PATH) -> str:
    path = shutil.which(BINARIES[kind], path=search_path)
    if path is None:
        package = {"nginx": "nginx-light (or nginx)", "haproxy": "haproxy"}[kind]
        raise DataPlaneError(f"--proxy {kind}: the {kind} binary is not installed (not on PATH or in "
                             f"/usr/sbin); install it (Debian: apt-get install {package}) or use "
                             f"--proxy builtin")
    return path


def command(kind: str, binary: str, layout: Layout, *, test: bool = False, path: str | None = None) -> list[str]:
    """``path``: a configuration file other than the layout's (a reload's candidate)."""
    path = path or layout.config_file
    if kind == "nginx":
        argv = [binary, "-p", layout.directory + "/", "-e", "stderr", "-c", path]
        return [*argv, "-t", "-q"] if test else [*argv, "-g", "daemon off;"]
    argv = [binary, "-f", path]
    # No -q for the check: HAProxy's -q also silences the alerts that say what is wrong.
    return [*argv, "-c"] if test else [*argv, "-W", "-db"]


async def haproxy_version(binary: str) -> tuple[int, int]:
    """(major, minor) of ``haproxy -v``; (0, 0) if it cannot be told."""
    proc = await asyncio.create_subprocess_exec(binary, "-v", stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await with_timeout(proc.communicate(), CHECK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return (0, 0)
    return parse_haproxy_version(out.decode("utf-8", "replace"))


def parse_haproxy_version(text: str) -> tuple[int, int]:
    match = re.search(r"HA-?Proxy version (\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


async def check(kind: str, binary: str, layout: Layout, path: str | None = None) -> None:
    """Raise DataPlaneError unless the server accepts the configuration file (``path``)."""
    path = path or layout.config_file
    proc = await asyncio.create_subprocess_exec(
        *command(kind, binary, layout, test=True, path=path), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await with_timeout(proc.communicate(), CHECK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DataPlaneError(f"{kind} did not finish checking {path} within {CHECK_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        text = out.decode("utf-8", "replace").strip()
        raise DataPlaneError(f"{kind} rejects the generated configuration {path}:\n{text}")


def probe_address(frontend: ProxySettings) -> tuple[str, int]:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(frontend.address, frontend.address)
    return host.strip("[]"), frontend.port


async def accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


class ServerProcess:
    """One supervised nginx/HAProxy: started, restarted after a crash, stopped."""

    def __init__(self, kind: str, binary: str, layout: Layout, frontend: ProxySettings, log_dir: str | None,
                 output: Output, *,
                 before_start: Callable[[], None], on_restart: Callable[[], Awaitable[None]],
                 family: tuple[Reaper | None, Watchdog | None]) -> None:
        self.kind = kind
        self.binary = binary
        self.layout = layout
        self.frontend = frontend  # where the server listens: its readiness probe
        self.log_dir = log_dir  # --log-dir (Logs): the server's output file
        self.output = output
        self._before_start = before_start  # renders the configuration for the current slots
        self._on_restart = on_restart
        # Owned like a worker: the reaper does not take it for an orphan, and the watchdog
        # kills its group if the master dies.
        self._reaper, self._watchdog = family
        self.proc: WorkerProcess | None = None
        self.policy = RestartPolicy()
        self.restarts = 0
        self.started_at: float | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def _spawn(self) -> WorkerProcess:
        self._before_start()
        log_path = os.path.join(self.log_dir, f"{self.kind}.log") if self.log_dir else None
        relay = LineRelay(self.kind, self.output, log_path)
        family_env = self._watchdog.family_env() if self._watchdog else {}
        with self._reaper.spawning() if self._reaper else contextlib.nullcontext():
            proc = await WorkerProcess.spawn(tuple(command(self.kind, self.binary, self.layout)),
                                             family_env, relay)
            if self._reaper is not None:
                self._reaper.own(proc.pid, proc.pgid)
        if self._watchdog is not None:
            self._watchdog.add(proc.pgid)
        self.started_at = time.monotonic()
        return proc

    async def _until_serving(self, proc: WorkerProcess) -> None:
        host, port = probe_address(self.frontend)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                await proc.finish_output(1.0)
                raise DataPlaneError(f"{self.kind} exited at start (code {proc.returncode}); its output is above")
            if await accepts(host, port):
                return
            await asyncio.sleep(0.05)
        raise DataPlaneError(f"{self.kind} did not accept connections on {host}:{port} within {START_TIMEOUT:g} s")

    async def start(self) -> None:
        """Start the server and return once it serves; on failure nothing of it is left."""
        proc = await self._spawn()
        self.proc = proc
        try:
            await self._until_serving(proc)
        except BaseException:
            await self._kill(proc)
            raise
        self._task = asyncio.ensure_future(self._watch())

    async def _kill(self, proc: WorkerProcess) -> None:
        proc.signal_group(signal.SIGKILL)
        await proc.wait()
        proc.signal_group(signal.SIGKILL)  # members that outlived their leader
        await proc.finish_output(1.0)
        if self._reaper is not None:
            self._reaper.worker_exited(proc.pid)
        if self._watchdog is not None:
            self._watchdog.remove(proc.pgid)

    async def _watch(self) -> None:
        """Restart the server whenever it dies, with the workers' backoff policy."""
        while not self._stopping:
            proc = self.proc
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            # An nginx master killed with -9 leaves its workers listening: end the group first.
            await self._kill(proc)
            decision = self.policy.on_exit(self.started_at or 0.0, time.monotonic(), code,
                                           ever_ready=True, starting_up=False)
            loop = " (crash-looping)" if decision.crash_looping else ""
            self.output.fleet(f"{self.kind} {decision.reason}{loop}; restarting it in {decision.delay:.1f} s")
            await asyncio.sleep(decision.delay)
            if self._stopping:
                return
            try:
                self.proc = await self._spawn()
                self.restarts += 1
                await self._until_serving(self.proc)
                await self._on_restart()
                self.output.fleet(f"{self.kind} restarted (pid {self.proc.pid})")
            except (DataPlaneError, OSError) as exc:
                self.output.fleet(f"{self.kind} restart failed: {exc}")
                if self.proc is not None and self.proc.returncode is None:
                    self.proc.signal_group(signal.SIGKILL)

    async def stop(self, timeout: float) -> None:
        """Graceful stop (finish in-flight requests up to ``timeout``), then SIGKILL."""
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait([self._task])
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.signal_group(SOFT_STOP[self.kind])
            done, _ = await asyncio.wait({asyncio.ensure_future(proc.wait())}, timeout=max(timeout, 0.1))
            if not done:
                self.output.fleet(f"{self.kind} still busy after {timeout:g} s; killing it")
        await self._kill(proc)
