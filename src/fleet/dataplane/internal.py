"""fleet's own HTTP routes (``/metrics``, ``/_fleet/...``) behind a managed nginx/HAProxy.

The routes the built-in proxy serves itself (``Balancer.add_local_route``) are served here on
a unix socket in the data plane's private directory; nginx and HAProxy forward those paths to
it. Who may see them (``--metrics-allow``) is decided by the server in front, which knows the
client's address; the socket itself is reachable only by fleet's user (0600 in a 0700
directory). Answers are rendered at most once per ``FLEET_METRICS_TTL`` (1 s by default), as on
the built-in proxy; the clock is passed in, so a test can move it.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable

from fleet.balancer.context import Clock, render_ttl

Handler = Callable[[], tuple[int, str, bytes]]


class InternalRoutes:
    def __init__(self, clock: Clock = time.monotonic, ttl: float | None = None) -> None:
        self.clock = clock
        self.ttl = render_ttl(os.environ) if ttl is None else ttl
        self.routes: dict[str, Handler] = {}
        self.headers: dict[str, tuple[tuple[str, str], ...]] = {}  # extra headers (the page's CSP)
        self._cache: dict[str, tuple[float, tuple[int, str, bytes]]] = {}
        self._server: Any = None

    def add(self, path: str, handler: Handler, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.routes[path] = handler
        self.headers[path] = tuple(headers)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        handler = self.routes.get(path)
        if handler is None:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        now = self.clock()
        cached = self._cache.get(path)
        if cached is None or now - cached[0] >= self.ttl:
            cached = (now, handler())
            self._cache[path] = cached
        return cached[1]

    def start(self, socket_path: str) -> None:
        import tornado.httpserver
        import tornado.netutil
        import tornado.web

        routes = self

        class RouteHandler(tornado.web.RequestHandler):
            def get(self) -> None:
                status, content_type, body = routes.answer(self.request.path)
                self.set_status(status)
                self.set_header("Content-Type", content_type)
                for name, value in routes.headers.get(self.request.path, ()):
                    self.set_header(name, value)
                self.write(body)

            def head(self) -> None:
                status, content_type, _ = routes.answer(self.request.path)
                self.set_status(status)
                self.set_header("Content-Type", content_type)
                for name, value in routes.headers.get(self.request.path, ()):
                    self.set_header(name, value)

        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/.*", RouteHandler)]),
                                               idle_connection_timeout=60, body_timeout=10,
                                               max_body_size=0, max_header_size=64 * 1024)
        server.add_socket(tornado.netutil.bind_unix_socket(socket_path, mode=0o600))
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
