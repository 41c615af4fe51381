"""A small Tornado app for `fleet up examples/tornado_hello.py -n 3` and for fleet's tests.

Routes:
  /                 "hello from w1 on port 5101" (worker id and port, from the environment)
  /slow?seconds=S   answers after S seconds (default 1): an in-flight request for drain tests
  /ws               WebSocket echo: every message comes back prefixed with the worker id
"""

from __future__ import annotations

import asyncio
import os

import tornado.web
import tornado.websocket


def worker_label() -> tuple[str, str]:
    return os.environ.get("FLEET_WORKER_ID", "?"), os.environ.get("PORT", "?")


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        worker_id, port = worker_label()
        self.set_header("Content-Type", "text/plain")
        self.write(f"hello from {worker_id} on port {port}\n")


class SlowHandler(tornado.web.RequestHandler):
    async def get(self) -> None:
        seconds = float(self.get_argument("seconds", "1"))
        await asyncio.sleep(seconds)
        worker_id, port = worker_label()
        self.set_header("Content-Type", "text/plain")
        self.write(f"slept {seconds} s in {worker_id} on port {port}\n")


class EchoHandler(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True  # an echo demo; the proxy's --allow-websocket-origin is what guards origins

    def on_message(self, message: str | bytes) -> None:
        worker_id, _ = worker_label()
        if isinstance(message, bytes):
            self.write_message(message, binary=True)
        else:
            self.write_message(f"{worker_id}: {message}")


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/", HelloHandler),
        (r"/slow", SlowHandler),
        (r"/ws", EchoHandler),
    ])


if __name__ == "__main__":  # also runnable on its own: PORT=8888 python tornado_hello.py
    async def main() -> None:
        make_app().listen(int(os.environ.get("PORT", "8888")), "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())
