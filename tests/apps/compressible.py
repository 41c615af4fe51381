"""The worker app of the compression tests: bodies worth compressing and bodies that are not.

  /text?kb=N        N KiB of log-like text/plain with Content-Length (and a strong ETag)
  /stream?mb=N      N MiB of text/plain, chunked, 256 KiB per flush (never held whole)
  /events           text/event-stream, three events, chunked
  /encoded          a gzip body the app encoded itself (Content-Encoding: gzip)
  /small            60 bytes of text/plain
  /png              4 KiB of image/png (already compressed data)
  /vary             text/html with Vary: Cookie
  /notransform      text/plain with Cache-Control: no-transform
"""

from __future__ import annotations

import asyncio
import gzip
import os

import tornado.iostream
import tornado.web

LINE = b"%06d GET /dashboard/plot?id=%d 200 worker=w0 elapsed=%d.%03dms\n"


def block(size: int) -> bytes:
    """``size`` bytes of log-like text: compressible, but not one repeated byte."""
    out = bytearray()
    index = 0
    while len(out) < size:
        out += LINE % (index, index * 7919 % 10007, index % 97, index * 31 % 1000)
        index += 1
    return bytes(out[:size])


BLOCK = block(256 * 1024)


class Text(tornado.web.RequestHandler):
    def get(self) -> None:
        body = BLOCK[:int(self.get_argument("kb", "64")) * 1024]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("ETag", '"text-%d"' % len(body))
        self.write(body)

    def compute_etag(self) -> None:
        return None  # the ETag above, strong, as set

    head = get


class Stream(tornado.web.RequestHandler):
    async def get(self) -> None:
        pieces = int(self.get_argument("mb", "1")) * 4
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        try:
            for _ in range(pieces):
                self.write(BLOCK)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass


class Events(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        for index in range(3):
            self.write(b"data: " + BLOCK[:1024].replace(b"\n", b" ") + b" %d\n\n" % index)
            await self.flush()
            await asyncio.sleep(0.01)


class Encoded(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Content-Encoding", "gzip")
        self.write(gzip.compress(BLOCK[:8192], mtime=0))  # the same bytes every time


class Small(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(BLOCK[:60])


class Png(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "image/png")
        self.write(os.urandom(4096))


class VaryCookie(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html")
        self.set_header("Vary", "Cookie")
        self.write(BLOCK[:4096])


class NoTransform(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Cache-Control", "no-transform")
        self.write(BLOCK[:4096])


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/text", Text), (r"/stream", Stream), (r"/events", Events), (r"/encoded", Encoded), (r"/small", Small),
        (r"/png", Png), (r"/vary", VaryCookie), (r"/notransform", NoTransform)])


async def main() -> None:
    make_app().listen(int(os.environ["PORT"]), address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
