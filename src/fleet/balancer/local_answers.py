"""The proxy's answers to the requests it serves itself: the built-in routes (``/metrics``,
``/_fleet/...``) and Bokeh's static files from memory.

``LocalAnswers`` belongs to one client connection's ``response.Responder`` (which holds it and
calls ``serve`` for an exchange whose ``Exchange.local`` is set); it writes through the
responder, like any response: keep-alive and pipelining as usual. What it needs of the
responder is ``AnswerSink``. It is not where the routes are chosen (``protocol`` sets
``Exchange.local``) nor where a static file is read (``balancer.static_files``).
"""

from __future__ import annotations

from typing import Protocol

from fleet.balancer.bokeh_routing import StaticHit
from fleet.balancer.context import ProxyContext
from fleet.balancer.exchange import Exchange
from fleet.balancer.head import local_response


class AnswerSink(Protocol):
    """What a local answer needs of the connection's answer side (``response.Responder``)."""

    proxy: ProxyContext
    write_paused: bool  # the client's socket is full
    closed: bool

    def write(self, data: bytes) -> None: ...

    def answer(self, exchange: Exchange, status: int, detail: str, extra: bytes = b"") -> None:
        """An error from the proxy itself; the connection closes after it."""

    def finish(self, exchange: Exchange) -> None: ...


class LocalAnswers:
    """The built-in routes and static files of one client connection."""

    __slots__ = ("sink", "waiting")

    def __init__(self, sink: AnswerSink) -> None:
        self.sink = sink
        # A static answer waiting for the client to read (one at most: a bound).
        self.waiting: tuple[Exchange, StaticHit] | None = None

    def serve(self, exchange: Exchange) -> None:
        """A built-in route (``/metrics``, ``/_fleet/...``), answered like any response:
        keep-alive and pipelining as usual. Refused clients get the 404 an unknown path gets."""
        sink = self.sink
        request = exchange.request
        assert request is not None
        handler = exchange.local
        if isinstance(handler, StaticHit):
            self.serve_static(exchange, handler)
            return
        if handler is False or request.websocket:
            sink.proxy.stats.client_error("builtin_not_found")
            sink.answer(exchange, 404, "")
            return
        if request.method not in (b"GET", b"HEAD"):
            sink.proxy.stats.client_error("bad_method")
            sink.answer(exchange, 405, "only GET and HEAD", extra=b"Allow: GET, HEAD\r\n")
            return
        status, content_type, body = handler()  # type: ignore[operator]
        close = not request.keep_alive or sink.proxy.closing
        response = local_response(status, content_type, body, close=close, http10=request.http10,
                                  head_only=request.method == b"HEAD", extra=handler.headers)  # type: ignore[union-attr]
        exchange.status = status
        sink.proxy.stats.bytes_sent += len(response)
        sink.write(response)
        sink.finish(exchange)

    def serve_static(self, exchange: Exchange, hit: StaticHit) -> None:
        """BokehJS or an app's ``static/`` file from the proxy's memory (``balancer.static_files``)."""
        sink = self.sink
        request = exchange.request
        assert request is not None and sink.proxy.bokeh is not None
        if sink.write_paused:
            # A pipelining client that does not read gets one file at a time, not 64 at once.
            self.waiting = (exchange, hit)
            return
        close = not request.keep_alive or sink.proxy.closing
        answer = sink.proxy.bokeh.static_response(hit, request, keep_alive=not close)
        if not isinstance(answer, tuple):
            # Its compressed copies are being made (the first request for it): wait for them.
            self.waiting = (exchange, hit)
            answer.add_done_callback(lambda _: self.compressed())
            return
        status, response = answer
        exchange.status = status
        if close:
            request.keep_alive = False
        sink.proxy.stats.bytes_sent += len(response)
        sink.write(response)
        sink.finish(exchange)

    def compressed(self) -> None:
        """A file's copies are made: the answer that waited for them goes out (unless the
        client went away, or does not read: then ``resume`` sends it when it does)."""
        if not self.sink.closed and not self.sink.write_paused:
            self.resume()

    def resume(self) -> None:
        """The client reads again: the static answer that waited for it goes out."""
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            self.serve_static(*waiting)


__all__ = ["AnswerSink", "LocalAnswers"]
