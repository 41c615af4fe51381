"""How many descriptors the proxy may spend on clients, and what it does at the limit.

A proxy holds two descriptors per proxied request (the client's and the worker's). Past the
open-files limit every ``socket()``/``accept()``/``open()`` fails with EMFILE, and a proxy that
keeps accepting clients it cannot connect anywhere wedges: the clients hold every descriptor
while they wait for one. So, like HAProxy deriving ``maxconn`` from ``ulimit -n``, the listener
admits at most ``cap`` clients, and keeps ``reserve`` descriptors free for everything else the
master does (the control socket, the status page's sampler, health checks, worker pipes). A
client accepted past either bound is shed: a short 503 and closed, at once, instead of
waiting in the backlog for descriptors that will not come.

The kernel hands out the lowest free descriptor, so an accepted socket numbered ``n`` proves
that 0..n-1 are all in use: ``fileno >= limit - reserve`` is an exact "fewer than ``reserve``
left" test that costs nothing per connection.

Pure: the numbers in, the decision out (``Balancer`` reads the limit and counts).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

RESERVE = 32  # descriptors kept free for the rest of the master
PER_CONNECTION = 2  # the client's socket and the worker's
SHED_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n"
               b"Retry-After: 1\r\nConnection: close\r\n\r\nfleet: out of file descriptors\r\n")


@dataclass(frozen=True)
class Budget:
    """The open-files limit in force and what else the process held when it was measured."""

    limit: int
    base: int  # descriptors open besides client connections and worker sockets
    reserve: int = RESERVE

    @property
    def cap(self) -> int:
        """Client connections that still leave each one its worker socket, and the reserve."""
        return max(1, (self.limit - self.base - self.reserve) // PER_CONNECTION)

    def must_shed(self, fileno: int, connections: int, pooled: int = 0) -> bool:
        """True for a just-accepted socket ``fileno`` while ``connections`` clients are open
        and ``pooled`` idle worker connections are kept."""
        if fileno + 1 >= self.limit - self.reserve:  # +1: its own worker socket
            return True
        return self.base + self.reserve + PER_CONNECTION * (connections + 1) + pooled > self.limit

    def measured(self, opened: int, clients: int, upstream: int) -> "Budget":
        """The budget again from ``opened`` descriptors (0: unknown, keep the base), of which
        ``clients`` are client sockets and ``upstream`` are worker sockets. The base never
        shrinks below what it was at start (a reading taken mid-change is a guess)."""
        if not opened:
            return self
        return Budget(self.limit, max(self.base, opened - clients - upstream), self.reserve)


def soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_descriptors() -> int:
    """Descriptors open now (0 when /proc is not there, or when even that cannot be opened)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


__all__ = ["Budget", "PER_CONNECTION", "RESERVE", "SHED_ANSWER", "open_descriptors", "soft_limit"]
