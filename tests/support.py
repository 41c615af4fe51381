"""Helpers for tests that start the real thing: free ports, a ``fleet`` subprocess, polling.

Every process started here is ended by pid (its whole process group), even when a test fails.
Nothing here sleeps and hopes: waits poll a condition until a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The env of a fleet whose /metrics a test reads right after acting: fleet renders the built-in
# routes at most once a second by default, so without this a test had to sleep out the cache.
FRESH_METRICS = {"FLEET_METRICS_TTL": "0"}


def require_tool(name: str) -> str:
    """Path of an external tool; a skip locally, a failure in CI (a missing tool is a defect there)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path:
        return path
    message = f"{name} is not installed (.ci/run installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _below_ephemeral() -> int:
    """The first port the kernel hands out to outgoing connections (32768 on Linux by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, for a listener fleet will bind (see ``free_port_range``)."""
    return free_port_range(1, host)


def free_port_range(count: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A base port such that base..base+count-1 are all free now (for --base-port).

    Chosen below the kernel's ephemeral range: a port from that range can be taken between
    this check and fleet's bind by any outgoing connection on the machine (a readiness probe,
    a test client), which made start-up fail with "port already in use" under load.
    """
    import random

    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    ceiling = max(_below_ephemeral(), 12000)
    # fleet's default --surge-base-port is base + max(100, n): keep that block below the
    # ephemeral range and free too, for tests that leave it to the default (a surge port in
    # the ephemeral range failed a start with "port already in use").
    surge = max(100, count)
    for _ in range(attempts):
        base = rng.randrange(10000, ceiling - surge - count)
        socks = []
        try:
            for offset in [*range(count), *range(surge, surge + count)]:
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range found")


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> object:
    """Poll ``condition`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the condition may fail until it holds
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}" +
                         (f" (last error: {last_error!r})" if last_error else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET without raising on 4xx/5xx: (status, headers, body)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class FleetProcess:
    """A running ``fleet`` command whose output is collected line by line in a thread."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.args = list(args)
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        # Tests must never find a developer's fleet.toml or control socket by accident: conftest
        # gives each test a private XDG_RUNTIME_DIR (its fleets' sockets, what `fleet ls` sees).
        if env:
            full_env.update(env)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=cwd, start_new_session=True, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_output(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                match = regex.search(self.output())
                if match:
                    return match
                raise AssertionError(
                    f"fleet exited ({self.proc.returncode}) before printing {pattern!r}:\n{self.output()}"
                )
            return regex.search(self.output())

        try:
            return wait_until(found, timeout, message=f"output {pattern!r}")  # type: ignore[return-value]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- fleet output ---\n{self.output()}") from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=2)
        return code

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole process group; always reaps."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2)
        return self.proc.returncode

    def __enter__(self) -> "FleetProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tls_over_unix_socket(path: Path | str, context: ssl.SSLContext, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` over TLS on a Unix socket (``--unix-socket`` with a certificate) and read
    until the server closes: the whole answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        wrapped = context.wrap_socket(sock)
        wrapped.sendall(data)
        answer = b""
        while chunk := wrapped.recv(65536):
            answer += chunk
    return answer


def websocket_upgrade(port: int, path: str, origin: str, host: str | None = None) -> bytes:
    """The head a WebSocket upgrade with this ``Origin`` gets on a new connection to ``port``
    (``Host`` defaults to ``localhost:PORT``)."""
    head = (f"GET {path} HTTP/1.1\r\nHost: {host or f'localhost:{port}'}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def kill_group(pgid: int) -> None:
    """SIGKILL a process group we started (start_new_session=True), ignoring one already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_fleet(*args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> FleetProcess:
    return FleetProcess(args, env=env, cwd=cwd)


def iter_lines(text: str) -> Iterator[str]:
    yield from text.splitlines()


def run_without_the_compiled_path(*files: str) -> None:
    """Run these test modules again in a pytest of their own with ``FLEET_PURE_PYTHON=1``: the
    proxy then uses the Python head rules only, so both paths are tested end to end."""
    env = {**os.environ, "FLEET_PURE_PYTHON": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                             "-x", *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
