"""The old master's proxy before ``execv``: stop taking work, let what is in flight finish, and
give up the descriptors of what stays open (``Quiesced``). Undone by ``resume`` when the
upgrade does not happen after all (the exec failed).

Order, and why:
1. Stop accepting, listeners open: the kernel queues new clients in the backlog, none refused.
2. ``closing`` on every proxy context: a response finishing now says ``Connection: close`` and
   the client reconnects (into the backlog), as in a graceful stop.
3. Every pass (every ``POLL`` seconds, and until ``timeout``): a client between requests (no
   request read or answered, no partial head) stops being read at once, in the same loop turn
   it is seen idle, so no byte of its next request is consumed: it is handed over as it is. A
   WebSocket tunnel stops being read on both sides and waits until both write buffers are
   flushed: its unsent bytes are then in the kernel, which keeps them across ``execv``.
4. A request still in flight at ``timeout``: the upgrade is given up (``Refused``), nothing lost.
   A tunnel whose peer does not read within ``timeout`` is closed (it was not reading anyway).

With TLS nothing of a connection can be handed over (the session keys live in this process):
idle TLS clients are closed between requests and TLS tunnels end (said in the upgrade's message).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from fleet.balancer.protocol import ClientConnection
from fleet.balancer.server import Balancer

POLL = 0.005


class Refused(RuntimeError):
    """The proxy could not be quiesced; nothing was handed over and ``resume`` ran."""


@dataclass
class Quiesced:
    listeners: list[int] = field(default_factory=list)  # dup'ed descriptors
    clients: list[int] = field(default_factory=list)
    tunnels: list[tuple[str, int, int]] = field(default_factory=list)  # worker id, client fd, worker fd
    closed_tunnels: int = 0
    closed_clients: int = 0
    paused: list[Any] = field(default_factory=list)  # transports paused here (resumed on rollback)

    def fds(self) -> list[int]:
        return [*self.listeners, *self.clients, *(fd for _, c, w in self.tunnels for fd in (c, w))]


def _socket_fd(transport: Any) -> int:
    sock = transport.get_extra_info("socket")
    return os.dup(sock.fileno())


def _idle(client: ClientConnection) -> bool:
    responder = client.responder
    return (not client.queue and client.parsing is None and responder.tunnel is None and not responder.closed
            and not responder.lingering and not client.dead and not client.eof and client.upgrading is None)


def _flushed(client: ClientConnection) -> bool:
    tunnel: Any = client.responder.tunnel
    return (client.transport.get_write_buffer_size() == 0 and tunnel is not None
            and tunnel.transport.get_write_buffer_size() == 0)


async def quiesce(balancer: Balancer, timeout: float) -> Quiesced:
    """Steps 1-4 above; raises ``Refused`` (after resuming) if requests are still in flight."""
    loop = asyncio.get_running_loop()
    tls = balancer._ssl is not None
    balancer._pause_accepting()
    balancer._set_everywhere("closing", True)
    done = Quiesced()
    held: dict[ClientConnection, str] = {}  # client -> "idle" or "tunnel"
    deadline = loop.time() + timeout
    while True:
        busy = balancer._handshakes  # accepted just before: a ClientConnection in a moment
        for client in list(balancer.context.clients):
            if client in held or client.closed:
                continue
            if client.responder.tunnel is not None:
                client.transport.pause_reading()
                client.responder.tunnel.transport.pause_reading()  # type: ignore[attr-defined]
                done.paused += [client.transport, client.responder.tunnel.transport]  # type: ignore[attr-defined]
                held[client] = "tunnel"
            elif _idle(client):
                if tls:
                    client.close()
                    done.closed_clients += 1
                    continue
                client.transport.pause_reading()
                done.paused.append(client.transport)
                held[client] = "idle"
            else:
                busy += 1
        unflushed = [c for c, kind in held.items() if kind == "tunnel" and not c.closed and not _flushed(c)]
        if not busy and not unflushed or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL)
    if busy:
        resume(balancer, done)
        raise Refused(f"{busy} request(s) still in flight after {timeout:g} s; nothing changed, try again")
    for client, kind in held.items():
        if client.closed:
            continue
        if kind == "idle":
            done.clients.append(_socket_fd(client.transport))
            continue
        tunnel: Any = client.responder.tunnel
        exchange = client.responder.tunnel_exchange
        if tls or tunnel is None or exchange is None or exchange.upstream is None or not _flushed(client):
            client.close()
            done.closed_tunnels += 1
            continue
        done.tunnels.append((exchange.upstream.id, _socket_fd(client.transport), _socket_fd(tunnel.transport)))
    done.listeners = [os.dup(listener.fileno()) for listener in balancer._listeners]
    return done


def resume(balancer: Balancer, done: Quiesced) -> None:
    """The upgrade did not happen: serve on as before."""
    for fd in done.fds():
        os.close(fd)
    done.listeners, done.clients, done.tunnels = [], [], []
    balancer._set_everywhere("closing", False)
    for transport in done.paused:
        if not transport.is_closing():
            transport.resume_reading()
    done.paused = []
    balancer._below_limit()


__all__ = ["Quiesced", "Refused", "quiesce", "resume"]
