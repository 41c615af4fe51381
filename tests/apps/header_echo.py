"""The worker app of the trust drill: every request is answered with what the worker saw.

Any path: JSON with the request target, the headers as Tornado parsed them, ``remote_ip`` and
``protocol`` (what ``xheaders`` made of them), and the worker id; every target is remembered.
``GET /_received`` lists the remembered targets (not recorded itself), so a drill can prove that
a request the proxy refused never reached a worker. ``/ws`` is a WebSocket echo that accepts any
Origin (the proxy's allowlist is what is under test).
"""

from __future__ import annotations

import json
import os

import tornado.web
import tornado.websocket

WORKER = os.environ.get("FLEET_WORKER_ID", "?")
RECEIVED: list[str] = []
LIMIT = 200_000


class Echo(tornado.web.RequestHandler):
    def get(self) -> None:
        if self.request.uri != "/_received" and len(RECEIVED) < LIMIT:
            RECEIVED.append(self.request.uri or "")
        self.set_header("Content-Type", "application/json")
        body = {"received": RECEIVED} if self.request.uri == "/_received" else {
            "worker": WORKER, "uri": self.request.uri, "remote_ip": self.request.remote_ip,
            "protocol": self.request.protocol, "headers": list(self.request.headers.get_all())}
        self.write(json.dumps(body))


class Socket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:  # type: ignore[override]
        if len(RECEIVED) < LIMIT:
            RECEIVED.append(self.request.uri or "")

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message)


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/ws.*", Socket), (r"/.*", Echo)])
