"""The worker app of the balancer tests: one route per proxy behaviour under test.

  /                      "hello from wN on port P"
  /slow?seconds=S        answers after S seconds
  /headers               the request head as the worker saw it (JSON)
  /download?mb=N         N MiB of b"x", with Content-Length (or chunked with &chunked=1)
  /upload                POST/PUT: streams the body, answers its size and sha256
  /sse?n=N&gap=S         N server-sent events, S seconds apart
  /die                   half a response, then the worker process exits
  /hang                  never answers
  /unframed              HTTP/1.0-style body without length (ends when the worker closes)
  /ws                    WebSocket echo
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import tornado.iostream
import tornado.web
import tornado.websocket

WORKER = os.environ.get("FLEET_WORKER_ID", "?")
PORT = os.environ.get("PORT", "?")


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(f"hello from {WORKER} on port {PORT}\n")

    def head(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Content-Length", "30")


class Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_argument("seconds", "1")))
        self.write(f"slow from {WORKER}\n")


class Headers(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"worker": WORKER, "headers": [[k, v] for k, v in self.request.headers.get_all()],
                    "remote_ip": self.request.remote_ip, "uri": self.request.uri,
                    "protocol": self.request.protocol})


class Download(tornado.web.RequestHandler):
    async def get(self) -> None:
        size = int(float(self.get_argument("mb", "1")) * 2**20)
        if not self.get_argument("chunked", ""):
            self.set_header("Content-Length", str(size))
        piece = b"x" * 65536
        sent = 0
        while sent < size:
            part = piece[: min(len(piece), size - sent)]
            self.write(part)
            sent += len(part)
            await self.flush()


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.request.connection.set_max_body_size(2**40)
        self.size = 0
        self.digest = hashlib.sha256()

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.digest.update(chunk)

    def post(self) -> None:
        self.write({"worker": WORKER, "size": self.size, "sha256": self.digest.hexdigest()})

    put = post


class Events(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        gap = float(self.get_argument("gap", "0.3"))
        for number in range(int(self.get_argument("n", "3"))):
            self.write(f"data: event {number}\n\n")
            await self.flush()
            await asyncio.sleep(gap)


class Die(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Length", "1000000")
        self.write(b"y" * 1000)
        await self.flush()
        await asyncio.sleep(0.2)
        os._exit(17)


class Hang(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(3600)


class Unframed(tornado.web.RequestHandler):
    async def get(self) -> None:
        stream = self.request.connection.detach()
        await stream.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"u" * 5000)
        stream.close()


class Echo(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message if isinstance(message, bytes) else f"{WORKER}: {message}",
                           binary=isinstance(message, bytes))


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/", Hello), (r"/slow", Slow), (r"/headers", Headers), (r"/download", Download),
        (r"/upload", Upload), (r"/sse", Events), (r"/die", Die), (r"/hang", Hang),
        (r"/unframed", Unframed), (r"/ws", Echo),
    ], websocket_max_message_size=2**24)
