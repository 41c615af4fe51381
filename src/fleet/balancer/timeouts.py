"""Timeouts of a client connection and its exchanges, checked by the balancer's once-a-second
sweep: no request has a timer of its own, so timing costs nothing on the hot path.

Each exchange state's limit comes from ``exchange.timeout_of``; what happens when it passes
depends on whose fault it is: a client that stops sending gets 408, a worker that stops
answering 504, a queue wait 503, a response nobody reads or a silent WebSocket a close.
"""

from __future__ import annotations

from fleet.balancer.context import PINNED_WAIT
from fleet.balancer.exchange import (
    AWAITING_HEAD, CONNECTING, QUEUED, RELAYING, SENDING, UPGRADING, Exchange, timeout_of,
)
from fleet.balancer.flow import PEER_FULL
from fleet.balancer.forward import Forwarding
from fleet.balancer.head import HeadError
from fleet.balancer.response import LINGER_SECONDS


class Timeouts(Forwarding):
    __slots__ = ()

    _reads: int
    _reads_seen: int
    _progress_at: float
    _relay_reads: int

    def sweep(self, now: float) -> None:
        proxy = self.proxy
        if self.lingering:
            if now - self.lingering > LINGER_SECONDS:
                self.transport.close()
            return
        if self.closed:
            return
        if self._reads != self._reads_seen:
            self._reads_seen = self._reads
            self._progress_at = now
        tunnel = self.tunnel
        if tunnel is not None:
            exchange = self.tunnel_exchange
            if exchange is not None:
                if tunnel.reads != self._relay_reads or self._progress_at == now:
                    self._relay_reads = tunnel.reads
                    exchange.since = now
                elif now - exchange.since > proxy.limits.websocket_idle_timeout:
                    proxy.stats.client_error("websocket_idle")
                    tunnel.close()
                    self.close()
            return
        parsing = self.parsing
        if parsing is not None and not self._dead:
            if parsing.request is None:
                if now - parsing.since > proxy.header_timeout:
                    proxy.stats.client_error("header_timeout")
                    self.transport.abort()
                return
            if self._body_too_slow(parsing, now):
                return
        queue = self.queue
        if not queue:
            if parsing is None and now - self.idle_since > proxy.client_timeout:
                self.close()
            return
        exchange = queue[0]
        state = exchange.state
        if state is SENDING and self._progress_at == now:
            exchange.since = now  # body bytes came in since the last sweep
        if state is RELAYING:
            conn = exchange.conn
            reads = conn.reads if conn is not None else -1
            if reads != self._relay_reads:
                self._relay_reads = reads
                exchange.since = now
                return
        limit = timeout_of(state, proxy.limits)
        if state is QUEUED and exchange.affinity is not None and now - exchange.queued_at >= PINNED_WAIT:
            # A pinned request's wait for its own worker is over: any worker will do now.
            if self.try_dispatch_queued(exchange):
                self._leave_queue(exchange)
                return
        if limit is None or now - exchange.since <= limit:
            return
        if state is QUEUED:
            self.queue_timed_out(exchange, now)
        elif state is AWAITING_HEAD or state is UPGRADING or state is CONNECTING:
            self.upstream_timed_out(exchange)
        elif state is SENDING:
            if self.flow.paused(PEER_FULL):
                self.upstream_timed_out(exchange)  # the worker stopped taking the body
            else:
                self._reject(HeadError(408, "body_timeout", "request body not received in time"), exchange)
        elif state is RELAYING:
            proxy.stats.client_error("relay_timeout")
            self._abandon([exchange])
            self.close()

    def _body_too_slow(self, exchange: Exchange, now: float) -> bool:
        """408 for a body that stopped (no byte for --client-timeout) or trickles below
        --min-body-rate once --client-timeout has passed (Apache mod_reqtimeout MinRate)."""
        proxy = self.proxy
        if self.flow.reasons:
            # Not read because of the proxy (a worker or the buffer is full): not the client's
            # fault (the SENDING state's own timeout still bounds it).
            if exchange.body_started:
                exchange.body_started += 1.0
            return False
        if now - self._progress_at > proxy.client_timeout:
            self._reject(HeadError(408, "body_timeout", "request body not received in time"), exchange)
            return True
        rate = proxy.min_body_rate
        if rate and exchange.body_started:
            elapsed = now - exchange.body_started
            if elapsed > proxy.client_timeout and exchange.body_received < rate * elapsed:
                self._reject(HeadError(408, "body_too_slow", "request body sent too slowly"), exchange)
                return True
        return False



__all__ = ["Timeouts"]
