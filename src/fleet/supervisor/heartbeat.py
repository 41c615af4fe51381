"""The master's side of ``--worker-timeout``: find ready workers that stopped turning, kill them.

An APP worker (``fleet.worker``) beats from inside its event loop (``fleet.worker.heartbeat``)
into a file the master created for that process; the master reads the file's times with
``fstat`` once a second. A worker whose last beat is older than ``--worker-timeout`` has a
blocked event loop: its group gets SIGKILL and the normal restart policy replaces it.

A ``--cmd`` worker cannot beat from inside. With ``--health-path`` it is probed (one GET at a
time, bounded by a timeout); a TCP connect proves nothing, since the kernel accepts connections
for a process whose loop is stuck. Without ``--health-path`` a ``--cmd`` worker has no hang
detection.

A live reload (``renew``) changes ``--worker-timeout`` and ``--health-path`` for the workers
spawned from then on (the new generation): a worker keeps the ones it started with, since its
beat interval came with its environment.

The decisions (``is_hung``, ``loop_lag``, ``beat_interval``) are pure and take ``now``; the
``Liveness`` class is the thin shell that reads files, runs probes and calls back to kill.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from fleet.supervisor.probe import probe_once
from fleet.tasks import cancel_and_wait
from fleet.worker.heartbeat import ENV_FD, ENV_INTERVAL

CHECK_INTERVAL = 1.0  # at most; twenty checks per timeout below 20 s, so a hang is seen promptly
# Below this a busy but healthy loop (a garbage collection, a slow import) would be killed.
MIN_WORKER_TIMEOUT = 1.0
# A --health-path probe never runs longer than this (the timeout check still uses the last 2xx).
MAX_PROBE_TIMEOUT = 10.0


def beat_interval(timeout: float) -> float:
    """How often a worker beats: four beats per timeout, at most one a second."""
    return min(1.0, timeout / 4)


def is_hung(last_beat: float, now: float, timeout: float) -> bool:
    """True if nothing proved the worker alive for more than ``timeout`` seconds (0: never hung)."""
    return timeout > 0 and now - last_beat > timeout


def loop_lag(last_beat: float, reported_lag: float, now: float, interval: float) -> float:
    """The loop lag to export: what the last beat measured, or more while the next beat is late."""
    return max(0.0, reported_lag, now - last_beat - interval)


def _private_dir() -> str | None:
    """tmpfs where there is one: a beat then never touches a disk."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class HeartbeatFile:
    """An unlinked file shared with one worker process through an inherited descriptor."""

    def __init__(self) -> None:
        handle, path = tempfile.mkstemp(prefix="fleet-beat-", dir=_private_dir())
        os.unlink(path)  # nothing to clean up, whatever kills the master
        self.fd = handle
        os.utime(self.fd, ns=(0, 0))  # mtime 0: no beat yet

    def read(self) -> tuple[float, float] | None:
        """(monotonic time of the last beat, loop lag it measured), or None before the first beat."""
        stat = os.fstat(self.fd)
        if stat.st_mtime_ns == 0:
            return None
        return stat.st_mtime_ns / 1e9, stat.st_atime_ns / 1e9

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class SpawnExtras:
    """What a worker's spawn adds for its heartbeat: environment and the descriptor to pass."""

    env: dict[str, str] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Rules:
    """A worker's ``--worker-timeout`` and ``--health-path``, as when it was spawned."""

    timeout: float
    health_path: str | None

    @property
    def interval(self) -> float:
        return beat_interval(self.timeout) if self.timeout > 0 else 0.0


@dataclass
class _Watched:
    label: str
    kill: Callable[[], None]
    since: float  # monotonic: when watching began (the baseline before a first beat)
    beat: HeartbeatFile | None
    rules: _Rules
    probe: asyncio.Task[None] | None = None
    last_ok: float = 0.0
    killed: bool = False


class Liveness:
    """Watches every ready worker of one fleet; kills those hung longer than ``timeout``."""

    def __init__(self, timeout: float, health_path: str | None, probe_host: str,
                 say: Callable[[str], None]) -> None:
        self._rules = _Rules(timeout, health_path)  # for workers spawned from now on
        self._spawned: dict[str, _Rules] = {}  # key -> the rules it was spawned with
        self._probe_host = probe_host
        self._say = say
        self._files: dict[str, HeartbeatFile] = {}
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped_probes: set[asyncio.Task[None]] = set()  # cancelled, awaited by close()

    @property
    def timeout(self) -> float:
        return self._rules.timeout

    @property
    def interval(self) -> float:
        return self._rules.interval

    @property
    def enabled(self) -> bool:
        return self._rules.timeout > 0

    def renew(self, timeout: float, health_path: str | None) -> None:
        """A reloaded configuration: for the workers spawned from now on."""
        self._rules = _Rules(timeout, health_path)

    # -- per worker ----------------------------------------------------------------------------
    def prepare(self, key: str, *, beats: bool) -> SpawnExtras:
        """Before spawning ``key``'s process: a fresh heartbeat file if it can beat (APP workers)."""
        self.forget(key)
        rules = self._spawned[key] = self._rules
        if rules.timeout <= 0 or not beats:
            return SpawnExtras()
        beat = self._files[key] = HeartbeatFile()
        return SpawnExtras({ENV_FD: str(beat.fd), ENV_INTERVAL: f"{rules.interval:g}"}, (beat.fd,))

    def watch(self, key: str, label: str, port: int, kill: Callable[[], None]) -> None:
        """``key``'s process is ready: from now on it must keep proving it is alive."""
        rules = self._spawned.get(key, self._rules)
        if rules.timeout <= 0:
            return
        beat = self._files.get(key)
        watched = _Watched(label, kill, time.monotonic(), beat, rules)
        if beat is None:
            if rules.health_path is None:
                return  # a --cmd worker without --health-path: nothing can tell (see --help)
            watched.probe = asyncio.ensure_future(self._probe(watched, port, rules.health_path))
        self._watched[key] = watched
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def forget(self, key: str) -> None:
        """``key``'s process is gone (or about to be replaced): stop watching, close its file."""
        self._spawned.pop(key, None)
        watched = self._watched.pop(key, None)
        if watched is not None and watched.probe is not None:
            watched.probe.cancel()  # awaited by close(); a probe is bounded by its own timeout
            self._stopped_probes.add(watched.probe)
            watched.probe.add_done_callback(self._stopped_probes.discard)
        beat = self._files.pop(key, None)
        if beat is not None:
            beat.close()

    def lags(self) -> dict[str, float]:
        """Loop lag of each watched APP worker by key, for ``fleet_worker_event_loop_lag_seconds``."""
        now = time.monotonic()
        result = {}
        for key, watched in self._watched.items():
            if watched.beat is None:
                continue
            reading = watched.beat.read()
            last, lag = reading if reading is not None else (watched.since, 0.0)
            result[key] = loop_lag(max(last, watched.since), lag, now, watched.rules.interval)
        return result

    # -- checking ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            timeouts = [w.rules.timeout for w in self._watched.values()] or [self._rules.timeout or CHECK_INTERVAL * 20]
            await asyncio.sleep(min(CHECK_INTERVAL, min(timeouts) / 20))
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        for watched in list(self._watched.values()):
            if watched.killed:
                continue
            if watched.beat is not None:
                reading = watched.beat.read()
                last = max(reading[0] if reading else 0.0, watched.since)
                what = "event loop blocked"
            else:
                last = max(watched.last_ok, watched.since)
                what = f"no 2xx answer from {watched.rules.health_path}"
            timeout = watched.rules.timeout
            if is_hung(last, now, timeout):
                watched.killed = True
                self._say(f"{watched.label} {what} for {now - last:.1f} s "
                          f"(--worker-timeout {timeout:g}): killing it")
                watched.kill()

    async def _probe(self, watched: _Watched, port: int, path: str) -> None:
        timeout = min(watched.rules.timeout, MAX_PROBE_TIMEOUT)
        while True:
            started = time.monotonic()
            if await probe_once(self._probe_host, port, path, timeout=timeout):
                watched.last_ok = time.monotonic()
            await asyncio.sleep(max(0.0, watched.rules.interval - (time.monotonic() - started)))

    async def close(self) -> None:
        for key in list(self._watched):
            self.forget(key)
        for key in list(self._files):
            self.forget(key)
        tasks = [task for task in (self._task, *self._stopped_probes) if task is not None]
        self._task = None
        await cancel_and_wait(tasks)


__all__ = ["Liveness", "HeartbeatFile", "SpawnExtras", "is_hung", "loop_lag", "beat_interval",
           "MIN_WORKER_TIMEOUT", "CHECK_INTERVAL"]
