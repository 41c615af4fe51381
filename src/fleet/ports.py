"""Port checks shared by the supervisor and the balancer: is it free, and who holds it.

A port already in use is the most common start-up failure; the message must name the port
and, where psutil can see it, the process that holds it (``port 5100 is in use by pid 4242
(python3)``). Nothing here keeps a socket open.
"""

from __future__ import annotations

import errno
import socket

import psutil


class PortInUseError(OSError):
    """A port fleet needs is taken; ``str()`` is the message to show the user."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, message)
        self.port = port

    def __str__(self) -> str:
        return self.strerror or ""


def port_owner(port: int) -> str | None:
    """Describe the process listening on ``port`` (``pid 42 (nginx)``), if psutil can see it."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            return f"pid {conn.pid} ({name})"
    return None


def in_use_error(host: str, port: int, what: str = "port") -> PortInUseError:
    owner = port_owner(port)
    held = f" by {owner}" if owner else ""
    return PortInUseError(f"{what} {host}:{port} is already in use{held}", port)


def check_free(host: str, port: int, what: str = "port") -> None:
    """Raise PortInUseError if ``host:port`` cannot be bound right now (SO_REUSEADDR, like servers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use_error(host, port, what) from None
            raise
