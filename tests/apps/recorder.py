"""The worker app of the fuzz drill: answers anything, and remembers what reached it.

Every request path other than ``/_received`` is answered ``200 ok from wN`` for any method,
after its whole body has been read. The worker keeps two logs of request targets:

  heads      every request head Tornado parsed (recorded when the head arrives)
  complete   every request whose body was read to the end and handed to the app

``GET /_received`` returns both as JSON (and is not recorded itself), so a test can ask each
worker directly which requests the proxy let through. A request the proxy answered itself
(400, 413, 431, ...) must never appear in ``complete``; a request target starting with
``/smuggled/`` (only ever sent hidden inside another request's body) must appear in neither.
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable

import tornado.httputil
import tornado.web

WORKER = os.environ.get("FLEET_WORKER_ID", "?")
HEADS: list[str] = []
COMPLETE: list[str] = []
LIMIT = 200_000  # bounded: a long fuzz run must not grow the worker without end


def _record(log: list[str], uri: str) -> None:
    if len(log) < LIMIT:
        log.append(uri)


class Recording(tornado.httputil.HTTPMessageDelegate):
    """Wraps the handler's delegate: records the request once its body is complete."""

    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate, uri: str) -> None:
        self.inner = inner
        self.uri = uri

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Awaitable[None] | None:
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        _record(COMPLETE, self.uri)
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class _EveryMethod(tuple):
    def __contains__(self, method: object) -> bool:
        return True


class Answer(tornado.web.RequestHandler):
    """200 for every method (PROPFIND, M-SEARCH, ... too), so a 4xx is never the app's.

    ``prepare`` finishes the response, so Tornado never looks for a per-method function."""

    SUPPORTED_METHODS = _EveryMethod(("GET",))  # type: ignore[assignment]

    def prepare(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish(f"ok from {WORKER}\n")


class Received(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"worker": WORKER, "heads": HEADS, "complete": COMPLETE}))


class RecordingApplication(tornado.web.Application):
    def find_handler(self, request: tornado.httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        delegate = super().find_handler(request, **kwargs)
        uri = request.uri or ""
        if uri.startswith("/_received"):
            return delegate
        _record(HEADS, uri)
        return Recording(delegate, uri)


def make_app() -> tornado.web.Application:
    return RecordingApplication([(r"/_received", Received), (r"/.*", Answer)])
