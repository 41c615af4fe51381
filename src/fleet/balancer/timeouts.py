"""Timeouts of a client connection and its exchanges, checked by the balancer's once-a-second
sweep: no request has a timer of its own, so timing costs nothing on the hot path.

Each exchange state's limit comes from ``exchange.timeout_of``; what happens when it passes
depends on whose fault it is: a client that stops sending gets 408, a worker that stops
answering 504, a queue wait 503, a response nobody reads or a silent WebSocket a close.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from fleet.balancer.context import PINNED_WAIT
from fleet.balancer.exchange import (
    AWAITING_HEAD, CONNECTING, QUEUED, RELAYING, SENDING, UPGRADING, Exchange, timeout_of,
)
from fleet.balancer.flow import PEER_FULL, ReadFlow
from fleet.balancer.forward import Forwarder
from fleet.balancer.head import HeadError
from fleet.balancer.response import LINGER_SECONDS, Responder


class SweptClient(Protocol):
    """What the sweep reads of a client connection's read side (``protocol.ClientConnection``)."""

    queue: deque[Exchange]
    flow: ReadFlow
    parsing: Exchange | None
    dead: bool
    reads: int  # data_received calls

    def reject(self, rejection: HeadError, exchange: Exchange | None = None) -> None: ...


class Sweeper:
    """The timeouts of one client connection, checked by the balancer's sweep."""

    __slots__ = ("client", "responder", "forwarder", "reads_seen", "progress_at", "relay_reads")

    def __init__(self, client: SweptClient, responder: Responder, forwarder: Forwarder) -> None:
        self.client = client
        self.responder = responder
        self.forwarder = forwarder
        self.reads_seen = 0
        self.progress_at = responder.idle_since  # when the client last sent a byte (at a sweep)
        self.relay_reads = -1  # the worker connection's reads at the last sweep

    def sweep(self, now: float) -> None:
        client = self.client
        responder = self.responder
        proxy = responder.proxy
        if responder.lingering:
            if now - responder.lingering > LINGER_SECONDS:
                responder.transport.close()
            return
        if responder.closed:
            return
        if client.reads != self.reads_seen:
            self.reads_seen = client.reads
            self.progress_at = now
        tunnel = responder.tunnel
        if tunnel is not None:
            exchange = responder.tunnel_exchange
            if exchange is not None:
                if tunnel.reads != self.relay_reads or self.progress_at == now:
                    self.relay_reads = tunnel.reads
                    exchange.since = now
                elif now - exchange.since > proxy.limits.websocket_idle_timeout:
                    proxy.stats.client_error("websocket_idle")
                    tunnel.close()
                    responder.close()
            return
        parsing = client.parsing
        if parsing is not None and not client.dead:
            if parsing.request is None:
                if now - parsing.since > proxy.header_timeout:
                    proxy.stats.client_error("header_timeout")
                    responder.transport.abort()
                return
            if self._body_too_slow(parsing, now):
                return
        queue = client.queue
        if not queue:
            if parsing is None and now - responder.idle_since > proxy.client_timeout:
                responder.close()
            return
        exchange = queue[0]
        state = exchange.state
        if state is SENDING and self.progress_at == now:
            exchange.since = now  # body bytes came in since the last sweep
        if state is RELAYING:
            conn = exchange.conn
            reads = conn.reads if conn is not None else -1
            if reads != self.relay_reads:
                self.relay_reads = reads
                exchange.since = now
                return
        limit = timeout_of(state, proxy.limits)
        if state is QUEUED and exchange.affinity is not None and now - exchange.queued_at >= PINNED_WAIT:
            # A pinned request's wait for its own worker is over: any worker will do now.
            if self.forwarder.try_dispatch_queued(exchange):
                self.forwarder.leave_queue(exchange)
                return
        if limit is None or now - exchange.since <= limit:
            return
        if state is QUEUED:
            self.forwarder.queue_timed_out(exchange, now)
        elif state is AWAITING_HEAD or state is UPGRADING or state is CONNECTING:
            self.forwarder.upstream_timed_out(exchange)
        elif state is SENDING:
            if client.flow.paused(PEER_FULL):
                self.forwarder.upstream_timed_out(exchange)  # the worker stopped taking the body
            else:
                client.reject(HeadError(408, "body_timeout", "request body not received in time"), exchange)
        elif state is RELAYING:
            proxy.stats.client_error("relay_timeout")
            responder.abandon([exchange])
            responder.close()

    def _body_too_slow(self, exchange: Exchange, now: float) -> bool:
        """408 for a body that stopped (no byte for --client-timeout) or trickles below
        --min-body-rate once --client-timeout has passed (Apache mod_reqtimeout MinRate)."""
        client = self.client
        proxy = self.responder.proxy
        if client.flow.reasons:
            # Not read because of the proxy (a worker or the buffer is full): not the client's
            # fault (the SENDING state's own timeout still bounds it).
            if exchange.body_started:
                exchange.body_started += 1.0
            return False
        if now - self.progress_at > proxy.client_timeout:
            client.reject(HeadError(408, "body_timeout", "request body not received in time"), exchange)
            return True
        rate = proxy.min_body_rate
        if rate and exchange.body_started:
            elapsed = now - exchange.body_started
            if elapsed > proxy.client_timeout and exchange.body_received < rate * elapsed:
                client.reject(HeadError(408, "body_too_slow", "request body sent too slowly"), exchange)
                return True
        return False


__all__ = ["Sweeper", "SweptClient"]
