"""Where a fleet's control socket lives, and how the CLI finds a running fleet from anywhere.

Every fleet of a user has its control socket ``<name>.sock`` in one private directory:
``$XDG_RUNTIME_DIR/fleet/`` when the session has one, else ``/tmp/fleet-<uid>/``. The
directory is created mode 0700 and refused (with the reason) if it is a symlink, belongs to
someone else or is open to others: in a shared ``/tmp`` another user could otherwise create it
first and receive every ``fleet down``. Never the working directory.

``fleet ls`` and the selector-less ``status/reload/scale/down/logs`` probe the sockets there:
each fleet answers ``info`` (name, pid, app, port, workers, start time). A socket nobody
accepts on is stale (its fleet was killed) and is removed once it is old enough not to be one
that a starting fleet is binding right now.

``--control-socket PATH`` bypasses all of this.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Mapping

from fleet.control import ControlError, request, socket_answers
from fleet.rules import valid_fleet_name

SUFFIX = ".sock"
# A socket refusing connections is left alone this long: a fleet may be between bind and listen.
STALE_AFTER = 5.0
INFO_TIMEOUT = 3.0
valid_name = valid_fleet_name  # the rule lives with the other parsers of what users write


def default_name(port: int, pid: int) -> str:
    """The name of a fleet started without --name: its port, or ``port0-<pid>`` for --port 0
    (several fleets on port 0 must not share a socket)."""
    return str(port) if port else f"port0-{pid}"


def runtime_dir(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """The directory holding this user's control sockets (not created here)."""
    environ = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "fleet")
    return f"/tmp/fleet-{uid}"


def check_private(path: str, uid: int | None = None) -> None:
    """Raise ControlError unless ``path`` is a real directory of ``uid`` that only it can use."""
    uid = os.getuid() if uid is None else uid
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ControlError(f"runtime directory {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{path} is not a directory (a symlink or a file); refusing to use it "
                           f"for control sockets. Remove it or give --control-socket PATH")
    if info.st_uid != uid:
        raise ControlError(f"{path} belongs to uid {info.st_uid}, not to you (uid {uid}); refusing to "
                           f"put control sockets there. Remove it or give --control-socket PATH")
    if info.st_mode & 0o077:
        raise ControlError(f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}, "
                           f"needs 0700); refusing to use it. chmod 700 it or give --control-socket PATH")


def ensure_runtime_dir(environ: Mapping[str, str] | None = None) -> str:
    """The runtime directory, created 0700 if missing, checked private either way."""
    path = runtime_dir(environ)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlError(f"cannot create the runtime directory {path}: {exc.strerror}") from None
    check_private(path)
    return path


def socket_path(directory: str, name: str) -> str:
    return os.path.join(directory, name + SUFFIX)


def server_socket_path(configured: str | None, name: str | None, port: int,
                       environ: Mapping[str, str] | None = None) -> str:
    """The control socket ``fleet up`` serves: --control-socket, else ``<runtime>/<name>.sock``."""
    if configured:
        return configured
    return socket_path(ensure_runtime_dir(environ), name or default_name(port, os.getpid()))


@dataclass(frozen=True)
class FleetEntry:
    """One running fleet as ``info`` describes it."""

    socket: str
    name: str
    pid: int
    app: str
    port: int | None
    workers: int
    ready: int
    started_at: float

    @classmethod
    def from_reply(cls, path: str, reply: dict[str, Any]) -> "FleetEntry":
        return cls(socket=path, name=str(reply.get("name", "?")), pid=int(reply.get("pid", 0)),
                   app=str(reply.get("app", "?")), port=reply.get("port"),
                   workers=int(reply.get("workers", 0)), ready=int(reply.get("ready", 0)),
                   started_at=float(reply.get("started_at", 0.0)))

    def describe(self) -> str:
        port = f"port {self.port}" if self.port else "no proxy"
        return f"{self.name} ({port}, pid {self.pid}, {self.app})"


@dataclass(frozen=True)
class Scan:
    fleets: tuple[FleetEntry, ...]
    removed: tuple[str, ...]  # stale sockets deleted
    unreachable: tuple[str, ...]  # sockets that could not be judged (e.g. too young, no answer)


def scan(directory: str, now: float | None = None) -> Scan:
    """Probe every ``*.sock`` in ``directory`` that is a socket of ours; remove the stale ones.
    Symlinks and other users' sockets are skipped without being followed or connected to."""
    now = time.time() if now is None else now
    uid = os.getuid()
    fleets: list[FleetEntry] = []
    removed: list[str] = []
    unreachable: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return Scan((), (), ())
    except OSError as exc:
        raise ControlError(f"cannot list {directory}: {exc.strerror}") from None
    for entry in names:
        if not entry.endswith(SUFFIX):
            continue
        path = os.path.join(directory, entry)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(info.st_mode):
            continue  # a symlink or a file: never followed, never connected to
        if info.st_uid != uid:
            unreachable.append(path)  # planted by someone else: never connected to, never removed
            continue
        if not socket_answers(path):
            if now - info.st_mtime > STALE_AFTER:
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
            else:
                unreachable.append(path)
            continue
        try:
            fleets.append(FleetEntry.from_reply(path, request(path, "info", timeout=INFO_TIMEOUT)))
        except (ControlError, ValueError, TypeError):
            unreachable.append(path)  # an older fleet, or one too busy to answer now
    return Scan(tuple(fleets), tuple(removed), tuple(unreachable))


def choose(fleets: tuple[FleetEntry, ...], directory: str, *, name: str | None = None,
           port: int | None = None) -> FleetEntry:
    """The one fleet the selector (or its absence) means; ControlError says why not."""
    if name is not None:
        matching = [f for f in fleets if f.name == name]
        what = f"named {name!r}"
    elif port is not None:
        matching = [f for f in fleets if f.port == port or f.name == str(port)]
        what = f"on port {port}"
    else:
        matching = list(fleets)
        what = ""
    if len(matching) == 1:
        return matching[0]
    if not matching:
        running = ("; running: " + ", ".join(f.describe() for f in fleets)) if fleets else ""
        raise ControlError(f"no fleet{(' ' + what) if what else ''} running (looked in {directory}){running}")
    listing = ", ".join(f.describe() for f in matching)
    raise ControlError(f"several fleets{(' ' + what) if what else ''}: {listing}; "
                       f"choose one with --name NAME or --port PORT")




def find_socket(configured: str | None, name: str | None, port: int | None,
                environ: Mapping[str, str] | None = None) -> str:
    """The control socket a CLI command talks to: --control-socket, else the one running fleet
    the selector (--name, or a port given on the command line, in $FLEET_PORT or fleet.toml)
    picks, else the only running fleet. ControlError explains every other case."""
    if configured:
        return configured
    directory = runtime_dir(environ)
    if not os.path.lexists(directory):
        raise ControlError(f"no fleet running (looked in {directory})")
    check_private(directory)
    return choose(scan(directory).fleets, directory, name=name, port=port).socket


__all__ = ["FleetEntry", "Scan", "check_private", "choose", "default_name", "ensure_runtime_dir",
           "find_socket", "runtime_dir", "scan", "server_socket_path", "socket_path", "valid_name"]
