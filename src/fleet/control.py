"""The control socket: how ``fleet status/reload/scale/down`` talk to a running ``fleet up``.

A unix domain socket (mode 0600: only the user who started fleet may steer it; where it lives
and how the CLI finds it: ``fleet.discovery``), one JSON object per line each way::

    -> {"command": "scale", "args": {"workers": 4}}
    <- {"ok": true, "message": "scaled to 4 workers"}
    <- {"ok": false, "error": "..."}

``ControlServer`` is the master's side (it only parses and dispatches; the runner decides);
``request`` and ``format_status`` are the CLI's side.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import time
import traceback
from typing import Any, Awaitable, Callable

from fleet.acceptor import Acceptor

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# Seconds the CLI waits for an answer. reload answers once the new generation is ready (the
# drain goes on in the background); scale answers when it is done.
_TIMEOUTS = {"status": 15.0, "down": 15.0}
_LONG_TIMEOUT = 3600.0
_MAX_LINE = 1 << 20
_BACKLOG = 128


class ControlError(RuntimeError):
    """The control socket cannot be used; ``str()`` is the message for the user."""


def _probe(path: str) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                return False
            raise


socket_answers = _probe  # public name, for fleet.discovery


def claim(path: str) -> None:
    """Make sure ``path`` can be ours: refuse if a fleet answers there, remove a stale file.
    Anything but a socket there (a planted symlink included) is refused before it is touched:
    a symlink is never followed, not even to probe it."""
    if len(os.fsencode(path)) >= 108:
        raise ControlError(f"control socket path is too long for a unix socket: {path}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise ControlError(f"directory of the control socket does not exist: {directory}") from None
        return
    if not stat.S_ISSOCK(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a socket"
        raise ControlError(f"{path} exists and is {kind}; refusing to replace it")
    if info.st_uid != os.getuid():
        raise ControlError(f"{path} is a socket of uid {info.st_uid}, not yours (uid {os.getuid()}); "
                           f"refusing to use or replace it")
    if _probe(path):
        raise ControlError(f"another fleet is already running with control socket {path} "
                           f"(see `fleet status`, stop it with `fleet down`)")
    os.unlink(path)  # stale: left by a fleet that was killed


class ControlServer:
    """Serves the control socket on the master's event loop. It accepts through
    ``fleet.acceptor`` (not ``asyncio.start_unix_server``): under uvloop a server's listening
    socket is closed for good on the first EMFILE, and the control socket must outlive a
    burst of clients past the open-files limit."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._acceptor: Acceptor | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        claim(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # created 0600 from the start, no window with wider rights
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
            listener.listen(_BACKLOG)
            listener.setblocking(False)
            os.chmod(self.path, 0o600)
            self._inode = os.lstat(self.path).st_ino
        except OSError:
            listener.close()
            raise
        self._acceptor = Acceptor(listener, self._accepted)
        self._acceptor.start()

    def _accepted(self, sock: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_socket(sock))
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve_socket(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_MAX_LINE)
        except BaseException:
            sock.close()
            raise
        await self._serve_client(reader, writer)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                message = json.loads(line)
                command = str(message["command"])
                args = dict(message.get("args") or {})
            except (ValueError, KeyError, TypeError):
                reply: dict[str, Any] = {"ok": False, "error": "bad request: expected {\"command\": ...}"}
            else:
                try:
                    reply = await self._handler(command, args)
                except ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # a fleet bug: answer it, never leave the CLI guessing
                    traceback.print_exc()
                    reply = {"ok": False, "error": f"internal error in fleet: {exc!r} (see fleet's output)"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away before the answer (or sent a line past the limit)
        finally:
            writer.close()

    # -- fleet upgrade: the listener is handed to the next master (fleet.upgrade) ---------------
    async def pause(self, timeout: float) -> None:
        """Stop accepting (clients wait in the backlog) and wait, up to ``timeout``, until the
        answers being written have gone out."""
        if self._acceptor is not None:
            self._acceptor._pause()
        deadline = asyncio.get_running_loop().time() + timeout
        while self._clients and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    def resume(self) -> None:
        if self._acceptor is not None:
            self._acceptor.start()

    def listener_fd(self) -> int | None:
        """A duplicate of the listening socket's descriptor, for the next master."""
        return os.dup(self._acceptor.listener.fileno()) if self._acceptor is not None else None

    def adopt(self, fd: int) -> None:
        """Serve the listener the master before an upgrade bound (instead of ``start``)."""
        listener = socket.socket(fileno=fd)
        listener.setblocking(False)
        self._inode = os.lstat(self.path).st_ino
        self._acceptor = Acceptor(listener, self._accepted)
        self._acceptor.start()

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        try:
            # Only our own file: a second fleet may have claimed the path after a stale check.
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, command: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
    """Send one command to the fleet at ``path``; return its reply or raise ControlError."""
    if timeout is None:
        timeout = _TIMEOUTS.get(command, _LONG_TIMEOUT)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no fleet running at {path}") from None
        except OSError as exc:
            raise ControlError(f"cannot reach fleet at {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise ControlError(f"fleet at {path} did not answer {command!r} within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost connection to fleet at {path}: {exc.strerror}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"fleet at {path} sent no valid answer") from None
    if not reply.get("ok", False):
        raise ControlError(str(reply.get("error", "request failed")))
    return reply


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


duration = _duration  # public name, for fleet.fleetlist


def _bytes(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size}B"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as left-aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _proxy_lines(proxies: list[dict[str, Any]], now: float) -> list[str]:
    """--proxy-processes N: the data plane line and one row per proxy process."""
    states = [str(p.get("state") or "?") for p in proxies]
    rows = [("PROXY", "PID", "STATE", "UPTIME", "RESTARTS", "CONNS", "REQUESTS")]
    for p, state in zip(proxies, states):
        started = p.get("started_at")
        rows.append((
            f"p{p.get('row', '?')}",
            str(p.get("pid") or "-"),
            state,
            _duration(now - started if started else None),
            str(p.get("restarts", 0)),
            "-" if p.get("connections") is None else str(p["connections"]),
            "-" if p.get("requests") is None else str(p["requests"]),
        ))
    return [f"data plane: built-in proxy, {len(proxies)} processes on one port (SO_REUSEPORT), "
            f"{states.count('serving')} serving", *_table(rows)]


def _config_lines(config: dict[str, Any] | None, now: float) -> list[str]:
    """Where the configuration comes from, and the last configuration reload's outcome."""
    if not config or not config.get("source"):
        return []
    source = config["source"]
    line = f"configuration: {source['file']}{'' if source.get('file_exists') else ' (not present)'}"
    if source.get("command_line"):  # these win over the file at a reload
        line += f", command line: {', '.join(source['command_line'])}"
    lines = [line]
    last = config.get("last_reload")
    if last:
        line = f"last configuration reload: {last['result']}, {_duration(now - last['time'])} ago"
        if last["result"] == "refused" and last.get("changes"):  # why, in one line
            line += f": {str(last['changes'][0]).splitlines()[0]}"
        lines.append(line)
    return lines


def format_status(reply: dict[str, Any]) -> str:
    """The ``fleet status`` table (one row per worker) with a one-line summary above it, and
    with ``--proxy-processes N`` a row per proxy process between the two."""
    workers = reply.get("workers", [])
    now = reply.get("time", time.time())
    header = ("WORKER", "GEN", "PID", "PORT", "STATE", "UPTIME", "RESTARTS", "CONNS", "REQUESTS", "CPU%", "RSS")
    rows = [header]
    for w in workers:
        state = w.get("state", "?") + (" (crash-looping)" if w.get("crash_looping") else "")
        started = w.get("started_at")
        rows.append((
            str(w.get("id", "?")),
            str(w.get("generation", "-")),
            str(w.get("pid") or "-"),
            str(w.get("port", "-")),
            state,
            _duration(now - started if started else None),
            str(w.get("restarts", 0)),
            "-" if w.get("connections") is None else str(w["connections"]),
            "-" if w.get("requests") is None else str(w["requests"]),
            "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.1f}",
            _bytes(w.get("rss")),
        ))
    lines = []
    proxy = reply.get("proxy") or "no proxy"
    serving = [w for w in workers if w.get("current", True)]
    draining = len(workers) - len(serving)
    lines.append(f"fleet pid {reply.get('pid', '?')}: {reply.get('app', '?')}, "
                 f"{len(serving)}/{reply.get('desired', len(serving))} workers"
                 f"{f' (+{draining} replaced, draining or stopping)' if draining else ''}"
                 f"{', generation ' + str(reply['generation']) if reply.get('generation') else ''}, {proxy}")
    plane = reply.get("data_plane")
    if plane and plane.get("kind") in ("nginx", "haproxy"):
        restarts = plane.get("restarts") or 0
        lines.append(f"data plane: {plane['kind']} pid {plane.get('pid') or '-'}"
                     f"{f', restarted {restarts} times' if restarts else ''}"
                     f"{', metrics at ' + plane['metrics'] if plane.get('metrics') else ''}")
    proxies = reply.get("proxies") or []
    if len(proxies) > 1:
        lines += _proxy_lines(proxies, now)
    last = reply.get("last_reload")
    if last and not last.get("ok"):
        lines.append(f"last reload FAILED: {last.get('message', '?')}")
    if reply.get("acme"):
        from fleet.acme.manager import status_line
        lines.append(status_line(reply["acme"], now))
    for url, problem in (reply.get("broken_apps") or {}).items():
        lines.append(f"broken app {url}: {problem}")
    lines += _table(rows)
    lines += _config_lines(reply.get("config"), now)  # below the table: scripts read rows 2..
    upgrade = (reply.get("upgrade") or {}).get("last")
    if upgrade:  # fleet upgrade (fleet.upgrade): when, what, and the first line of why
        reason = str(upgrade.get("message") or "").splitlines()[:1]
        lines.append(f"last upgrade: {upgrade.get('result')}, {_duration(now - float(upgrade.get('time', now)))} ago"
                     f"{': ' + reason[0] if reason else ''}")
    return "\n".join(lines)
