"""What the parts of the proxy call on each other, named once: ``typing.Protocol``s, no code.

The client side (``balancer.protocol`` and the parts it is made of: ``forward``, ``response``,
``timeouts``) and the worker side (``balancer.upstream``) meet here, so neither imports the
other to say what it needs:

- ``ResponseSink``: where a worker connection delivers a response (``response.Responder``);
- ``WorkerLink``: what the client side does with a connection to a worker
  (``upstream.UpstreamConnection``);
- ``RequestSide``: what the response side asks of the request side when an exchange ends or a
  worker fails (``forward.Forwarder``);
- ``Waiter``: what the wait queue (``balancer.waitqueue``) asks of a request's connection;
- ``ProxyClient``: what the listener (``balancer.server``) does with a client connection.

Imports nothing of the balancer but the pure ``Exchange`` record.
"""

from __future__ import annotations

from typing import Protocol

from fleet.balancer.exchange import Exchange


class ResponseSink(Protocol):
    """The client side of one connection, as a worker connection sees it."""

    def start_batch(self) -> None:
        """Collect the writes of one read from the worker into one write to the client."""

    def flush(self) -> None: ...

    def interim_response(self, status: int, reason: bytes) -> None: ...

    def response_head(self, conn: WorkerLink, exchange: Exchange, status: int, raw: bytes) -> None: ...

    def response_body(self, body: bytes) -> None: ...

    def response_complete(self, conn: WorkerLink, exchange: Exchange, reusable: bool) -> None: ...

    def upgraded(self, conn: WorkerLink, exchange: Exchange, rest: bytes) -> None: ...

    def upstream_lost(self, conn: WorkerLink, exchange: Exchange) -> None:
        """The worker's connection closed before its response was complete."""

    def upstream_broken(self, exchange: Exchange, detail: str) -> None: ...

    def peer_full(self) -> None:
        """The worker's socket is full: stop reading the client until ``peer_ready``."""

    def peer_ready(self) -> None: ...

    def tunnel_write(self, data: bytes) -> None:
        """WebSocket bytes from the worker, straight to the client."""

    def end_tunnel(self) -> None: ...


class WorkerLink(Protocol):
    """One connection to a worker, as the client side drives it."""

    closed: bool
    reused: bool  # it carried an earlier exchange (it came from the pool)
    sent: bool  # request bytes of the current exchange went to the worker
    got_bytes: bool  # the worker answered something to the current exchange
    reads: int  # reads from the worker: progress, for the sweep

    def attach(self, sink: ResponseSink, exchange: Exchange) -> None: ...

    def send(self, data: bytes) -> None: ...

    def send_many(self, pieces: list[bytes]) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def become_tunnel(self, sink: ResponseSink) -> None: ...

    def release(self, reusable: bool) -> None:
        """The exchange is over: back to the idle pool if it can carry another."""

    def close(self) -> None: ...

    def drop_tunnel(self) -> None:
        """The client went: close the tunnel without telling the client back."""


class RequestSide(Protocol):
    """The request side of one client connection, as its response side sees it."""

    def dispatch(self, exchange: Exchange) -> None:
        """Find a worker for ``exchange`` (or queue it, or answer it locally)."""

    def release_held(self, exchange: Exchange) -> None: ...

    def leave_queue(self, exchange: Exchange) -> None: ...

    def upstream_lost(self, conn: WorkerLink, exchange: Exchange) -> None: ...

    def upstream_broken(self, exchange: Exchange, detail: str) -> None: ...


class Waiter(Protocol):
    """A connection with a request in the wait queue."""

    def try_dispatch_queued(self, exchange: Exchange) -> bool:
        """Give it to a worker if one can take it now; False keeps it waiting."""


class ProxyClient(Protocol):
    """A client connection, as the listener that accepted it sees it."""

    @property
    def tunnel(self) -> WorkerLink | None: ...

    def sweep(self, now: float) -> None: ...

    def in_flight(self) -> int: ...

    def close_if_idle(self) -> None: ...

    def close(self) -> None: ...


__all__ = ["ProxyClient", "RequestSide", "ResponseSink", "Waiter", "WorkerLink"]
