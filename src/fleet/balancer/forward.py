"""Getting a request to a worker: choose one (``balancer.policy``), wait in the queue when none
can take it (``--queue-timeout``), take a pooled connection or open one, send the head and the
held body, and, when that fails, the one retry decision (``policy.retry_decision``).

Request bytes that cannot go to a worker yet (no worker, not connected, behind a pipelined
request, or after an Upgrade head before the 101) are held, at most ``--max-buffered-request``
per connection (an Upgrade's at most ``UPGRADE_HOLD``); past that the client is not read.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque

from fleet.balancer.context import PINNED_WAIT, ProxyContext
from fleet.balancer.contracts import WorkerLink
from fleet.balancer.exchange import AWAITING_HEAD, CONNECTING, Exchange, QUEUED, SENDING, STREAMS_BODY, UPGRADING
from fleet.balancer.flow import BUFFERED, UPGRADE, ReadFlow
from fleet.balancer.head import IDEMPOTENT
from fleet.balancer.policy import Failure, Upstream, affinity_from_cookie, retry_decision
from fleet.balancer.response import Responder
from fleet.balancer.upstream import close_idle, open_connection


# The proxy out of descriptors (or kernel memory) when it connects to a worker.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Forwarder:
    """The request side of one client connection (a ``contracts.RequestSide`` and the
    ``contracts.Waiter`` the wait queue holds): held bytes, the choice, the send, the retry."""

    __slots__ = ("proxy", "queue", "flow", "responder", "buffered")

    def __init__(self, proxy: ProxyContext, queue: deque[Exchange], flow: ReadFlow) -> None:
        self.proxy = proxy
        self.queue = queue
        self.flow = flow
        self.responder: Responder = None  # type: ignore[assignment]  (set by the connection)
        self.buffered = 0  # request bytes held for workers, all exchanges of this connection

    def hold(self, exchange: Exchange, data: bytes) -> None:
        """Request bytes for the worker: sent now, or held (bounded) until they may go."""
        conn = exchange.conn
        if conn is not None and exchange.state in STREAMS_BODY:
            conn.send(data)
            return
        pending = exchange.pending
        if pending:
            pending.append(data)  # type: ignore[union-attr]  (a list once not empty)
        else:
            exchange.pending = [data]
        exchange.pending_size += len(data)
        self.buffered += len(data)
        request = exchange.request
        if request is not None and request.websocket:
            if exchange.pending_size > self.proxy.limits.upgrade_hold:
                self.flow.pause(UPGRADE)
        elif self.buffered > self.proxy.max_buffered_request:
            self.flow.pause(BUFFERED)

    def release_held(self, exchange: Exchange) -> None:
        """The exchange's held bytes were sent (or dropped): they no longer count."""
        if exchange.pending_size:
            self.buffered -= exchange.pending_size
            exchange.pending_size = 0
            exchange.pending = ()
            if self.buffered <= self.proxy.max_buffered_request:
                self.flow.resume(BUFFERED)

    def leave_queue(self, exchange: Exchange) -> None:
        self.proxy.waiting.remove(self, exchange)

    # -- choosing a worker -----------------------------------------------------------------------
    def _choose(self, exchange: Exchange, now: float) -> Upstream | None:
        upstreams = self.proxy.upstreams
        affinity = exchange.affinity
        # A pinned request waits a little for its own worker when that one is at its cap.
        may_wait = affinity is not None and (exchange.state is not QUEUED or now - exchange.queued_at < PINNED_WAIT)
        if affinity is not None and may_wait:
            pinned = upstreams.pinned_target(now, affinity, exchange.tried)
            if pinned is not None and upstreams.full(pinned):
                return None
        upstream = upstreams.choose(now, affinity, exchange.tried + exchange.stale if exchange.stale else exchange.tried)
        if upstream is None and exchange.stale:
            # Only pooled connections failed there (and its pool is gone): a fresh one may work.
            upstream = upstreams.choose(now, affinity, exchange.tried)
        return upstream

    def dispatch(self, exchange: Exchange) -> None:
        proxy = self.proxy
        request = exchange.request
        assert request is not None
        if exchange.local is not None:
            if exchange.request_done or request.websocket or request.method not in (b"GET", b"HEAD"):
                self.responder.local.serve(exchange)
            return  # on_message_complete dispatches it once its (empty) body is read
        now = proxy.loop.time()
        if not exchange.started:
            exchange.started = now
            bokeh = proxy.bokeh
            if bokeh is not None and bokeh.by_session:  # the Bokeh session's worker first
                exchange.affinity = bokeh.affinity(request, proxy.upstreams, now)
            if exchange.affinity is None and proxy.sticky and request.affinity_cookie is not None:
                pinned = affinity_from_cookie(request.affinity_cookie)
                if bokeh is not None and pinned is not None:
                    upstream = proxy.upstreams.get(pinned)
                    if upstream is not None and upstream.draining:
                        # A Bokeh request that names no session starts a new one: it belongs on
                        # a worker that stays. A draining one can be idle, and stop, between the
                        # page and its WebSocket, and the session would be made twice.
                        pinned = None
                exchange.affinity = pinned
        if exchange.affinity is None and not exchange.tried and not exchange.stale:
            upstream = proxy.upstreams.choose(now)  # the common case, without _choose's call
        else:
            upstream = self._choose(exchange, now)
            if upstream is None and (exchange.tried or exchange.stale):
                # Every worker it could go to has failed it. One still up may have failed it for
                # a reason now gone (a pooled connection of a killed worker), and a worker that
                # died comes back as a new process under its id: what was tried only orders the
                # choice. The attempts stay bounded by retry_decision's tries and time budget.
                exchange.tried = ()
                exchange.stale = ()
                upstream = self._choose(exchange, now)
        if upstream is not None:
            self._assign(exchange, upstream, now)
            return
        if proxy.queue_timeout <= 0 or proxy.waiting.full():
            detail = "no worker could be reached" if exchange.retries else "no worker is ready"
            self.responder.answer(exchange, 503, detail, extra=b"Retry-After: 1\r\n")
        else:
            exchange.move(QUEUED, now)
            exchange.queued_at = now
            proxy.waiting.add(self, exchange)

    def try_dispatch_queued(self, exchange: Exchange) -> bool:
        """From ``ProxyContext.wake``: False keeps it waiting."""
        if exchange.state is not QUEUED or self.responder.closed:
            return True
        now = self.proxy.loop.time()
        upstream = self._choose(exchange, now)
        if upstream is None:
            return False
        self.proxy.stats.observe_queue_wait(now - exchange.queued_at)
        self._assign(exchange, upstream, now)
        return True

    def queue_timed_out(self, exchange: Exchange, now: float) -> None:
        self.proxy.stats.observe_queue_wait(now - exchange.queued_at)
        detail = "no worker is ready" if not any(u.ready for u in self.proxy.upstreams) else "every worker is busy"
        self.responder.answer(exchange, 503, detail, extra=b"Retry-After: 1\r\n")

    def _assign(self, exchange: Exchange, upstream: Upstream, now: float) -> None:
        proxy = self.proxy
        exchange.upstream = upstream
        exchange.set_cookie = upstream.cookie if proxy.sticky and exchange.affinity != upstream.id else None
        upstream.stats.active_requests += 1
        exchange.counted = True
        idle = upstream.idle
        while idle:  # upstream.take_idle, inline: this runs for every request
            conn = idle.pop()
            if not conn.closed:
                self._send(exchange, conn, now)
                return
        exchange.move(CONNECTING, now)
        proxy.loop.create_task(self._connect(exchange, upstream))

    async def _connect(self, exchange: Exchange, upstream: Upstream) -> None:
        proxy = self.proxy
        try:
            conn = await open_connection(proxy, upstream, proxy.limits.connect_timeout)
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                # The proxy ran out, not the worker: marking it down would queue every request
                # behind a healthy worker. This one gets a 503 and the worker stays up.
                if exchange.state is CONNECTING and exchange.upstream is upstream:
                    self.responder.answer(exchange, 503, "the proxy is out of file descriptors",
                                          extra=b"Retry-After: 1\r\n")
                return
            self._connect_failed(exchange, upstream)
            return
        except asyncio.TimeoutError:
            self._connect_failed(exchange, upstream)
            return
        if exchange.state is not CONNECTING or exchange.upstream is not upstream or self.responder.closed:
            conn.release(reusable=True)
            return
        if conn.closed:
            # Connected, then closed before this coroutine ran (the worker died in between; the
            # kill drill hits it): its connection_lost had no exchange to tell, so without this
            # the request would wait for --upstream-timeout. Nothing reached the worker: it is a
            # connect failure, retried like one.
            upstream.stats.connect_errors += 1
            proxy.upstreams.mark_down(upstream, proxy.loop.time())
            self._failed(exchange, Failure.CONNECT, None)
            return
        self._send(exchange, conn, proxy.loop.time())

    def _connect_failed(self, exchange: Exchange, upstream: Upstream) -> None:
        proxy = self.proxy
        upstream.stats.connect_errors += 1
        proxy.upstreams.mark_down(upstream, proxy.loop.time())
        if exchange.state is CONNECTING and exchange.upstream is upstream:
            self._failed(exchange, Failure.CONNECT, None)

    def _send(self, exchange: Exchange, conn: WorkerLink, now: float) -> None:
        responder = self.responder
        conn.attach(responder, exchange)
        exchange.conn = conn
        request = exchange.request
        assert request is not None
        if request.websocket:
            # Nothing after the Upgrade head goes to the worker before its 101 (smuggling).
            conn.send(request.forward)
            exchange.move(UPGRADING, now)
        else:
            if exchange.pending:
                conn.send_many([request.forward, *exchange.pending])
                self.release_held(exchange)
            else:
                conn.send(request.forward)
            # A request without a body is whole once its head is out, even before llhttp reports
            # its end: one move instead of two on the hot path.
            whole = exchange.request_done or (not request.chunked and not request.content_length)
            exchange.move(AWAITING_HEAD if whole else SENDING, now)
        if responder.write_paused:
            conn.pause_reading()

    # -- failures: one path, one decision --------------------------------------------------------
    def upstream_lost(self, conn: WorkerLink, exchange: Exchange) -> None:
        """The worker's connection closed before its response was complete."""
        self._failed(exchange, Failure.CLOSED, conn)

    def upstream_broken(self, exchange: Exchange, detail: str) -> None:
        self._failed(exchange, Failure.BAD_RESPONSE, exchange.conn, detail)

    def upstream_timed_out(self, exchange: Exchange) -> None:
        conn = exchange.conn
        if conn is not None:
            conn.close()
        self._failed(exchange, Failure.TIMEOUT, conn)

    def _failed(self, exchange: Exchange, failure: Failure, conn: WorkerLink | None,
                detail: str = "") -> None:
        exchange.conn = None
        responder = self.responder
        responder.uncount(exchange)
        if exchange.finished or responder.closed:
            return
        if exchange.responded:
            responder.close()  # mid-response: a truncated body must not look complete
            return
        request = exchange.request
        upstream = exchange.upstream
        assert request is not None
        if upstream is not None:
            if conn is not None and conn.reused and failure is Failure.CLOSED:
                # A pooled connection died under it: the worker may have died with all its
                # pooled connections (kill -9), which would each fail a request the same way.
                exchange.stale += (upstream,)
                close_idle(upstream)
            else:
                exchange.tried += (upstream,)
        proxy = self.proxy
        now = proxy.loop.time()
        replayable = not request.chunked and not request.content_length and (
            exchange.request_done or failure is Failure.CONNECT)
        retry = retry_decision(
            failure, sent=conn is not None and conn.sent, answered=conn is not None and conn.got_bytes,
            idempotent=request.method in IDEMPOTENT, replayable=replayable,
            tries_left=len(proxy.upstreams) + 1 - exchange.retries,
            time_left=proxy.upstream_timeout - (now - exchange.started))
        if retry and exchange.state is not SENDING:
            exchange.retries += 1
            proxy.stats.retries += 1
            exchange.upstream = None
            self.dispatch(exchange)
            return
        if failure is Failure.TIMEOUT:
            responder.answer(exchange, 504, "the worker did not answer in time")
        elif failure is Failure.CONNECT:
            responder.answer(exchange, 502, "the worker could not be reached")
        else:
            responder.answer(exchange, 502, detail or "the worker closed the connection")


__all__ = ["Forwarder"]
