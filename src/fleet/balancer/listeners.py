"""The listening sockets of the proxy: TCP on every address a name resolves to, a unix socket,
and the open-files limit a proxy runs with.

What this is not: accepting (``balancer.server`` and ``fleet.acceptor`` do that)."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import stat
from typing import Any

BACKLOG = 4096


def raise_open_files_limit() -> int:
    """A proxy holds two descriptors per connection: use the hard limit, as nginx's
    ``worker_rlimit_nofile`` would. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


async def connect_or_close(loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Any) -> None:
    """Give an accepted socket its protocol; a socket that cannot have one is closed."""
    try:
        await loop.connect_accepted_socket(lambda: protocol, sock)
    except Exception:
        sock.close()
    except BaseException:
        sock.close()
        raise


def unix_listener(path: str) -> socket.socket:
    """A listening unix socket at ``path``; a stale socket file there (nobody listening) is
    replaced, anything else is an error."""
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise OSError(errno.EEXIST, f"--unix-socket {path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody listens there
            else:
                raise OSError(errno.EADDRINUSE, f"unix socket {path} is already in use")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def tcp_listeners(address: str, port: int, *, reuse_port: bool = False,
                   listen: bool = True) -> list[socket.socket]:
    """Bound, listening, non-blocking TCP sockets on every address ``address`` resolves to
    (``localhost``: 127.0.0.1 and ::1), as ``loop.create_server`` would; port 0 picks one port.
    ``reuse_port``: several proxy processes share the port, the kernel spreads connections
    over their listeners. ``listen=False``: bound only (the master of several proxy processes
    holds the port this way: the kernel sends no connection to a socket that does not listen)."""
    listeners: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, _, _, _, sockaddr in socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE):
            if (family, sockaddr[0]) in seen:
                continue
            seen.add((family, sockaddr[0]))
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(listeners) > 1:
                sockaddr = (sockaddr[0], listeners[0].getsockname()[1], *sockaddr[2:])
            listener.bind(sockaddr)
            if listen:
                listener.listen(BACKLOG)
            listener.setblocking(False)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


_tcp_listeners = tcp_listeners  # the name balancer.group imports

__all__ = ["BACKLOG", "connect_or_close", "raise_open_files_limit", "tcp_listeners", "unix_listener"]
