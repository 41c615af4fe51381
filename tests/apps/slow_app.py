"""The worker app of the resource-exhaustion tests: slow answers, big answers, a WebSocket
that accepts any Origin (so only the proxy can refuse one).

  /                 "hello from wN"
  /slow?ms=N        answers after N milliseconds
  /big?mb=N         N MiB of b"x" with Content-Length
  /ws               WebSocket echo, check_origin accepts everything
"""

from __future__ import annotations

import asyncio
import os

import tornado.iostream
import tornado.web
import tornado.websocket

WORKER = os.environ.get("FLEET_WORKER_ID", "?")


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(f"hello from {WORKER}\n")


class Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(int(self.get_argument("ms", "1000")) / 1000)
        self.write(f"slow from {WORKER}\n")


class Big(tornado.web.RequestHandler):
    async def get(self) -> None:
        megabytes = int(self.get_argument("mb", "1"))
        self.set_header("Content-Length", str(megabytes << 20))
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(megabytes):
                self.write(chunk)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass


class Socket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True  # permissive on purpose: the proxy's own check is under test

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/slow", Slow), (r"/big", Big), (r"/ws", Socket), (r"/", Hello)])


async def main() -> None:
    make_app().listen(int(os.environ["PORT"]), address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
