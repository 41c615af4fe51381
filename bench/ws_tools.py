"""WebSocket helpers for the benchmark: a minimal echo backend and a load client.

Both work at the byte level so that neither is the bottleneck: the backend answers the
handshake and then echoes raw bytes back; the client sends fixed-size masked text frames and
counts echoed bytes. A proxy relays the bytes after ``101`` as they are, so what is measured
is each proxy's relay cost.

    python bench/ws_tools.py serve PORT...
    python bench/ws_tools.py load HOST:PORT --connections 50 --window 16 --seconds 10
    python bench/ws_tools.py hold HOST:PORT --connections 5000   (prints "open N", waits for stdin EOF)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = bytes([0x81, 0x80 | len(PAYLOAD)]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class EchoServer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.head = b""
        self.open = False

    def data_received(self, data: bytes) -> None:
        if self.open:
            self.transport.write(data)  # type: ignore[attr-defined]
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        key = b""
        for line in self.head[:end].split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"  # type: ignore[attr-defined]
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.open = True
        rest = self.head[end + 4:]
        if rest:
            self.transport.write(rest)  # type: ignore[attr-defined]


async def serve(ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for port in ports:
        await loop.create_server(EchoServer, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print("serving", flush=True)
    await asyncio.Event().wait()


async def handshake(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"no 101: {head[:100]!r}")
    return reader, writer


async def load(host: str, port: int, connections: int, window: int, seconds: float) -> dict[str, float]:
    deadline = time.monotonic() + seconds
    counts = [0] * connections

    async def one(index: int) -> None:
        reader, writer = await handshake(host, port)
        writer.write(FRAME * window)
        pending = 0
        size = len(FRAME)
        while time.monotonic() < deadline:
            data = await reader.read(65536)
            if not data:
                break
            pending += len(data)
            done, pending = divmod(pending, size)
            counts[index] += done
            writer.write(FRAME * done)
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(connections)))
    elapsed = time.monotonic() - start
    return {"messages_per_second": sum(counts) / elapsed, "messages": sum(counts), "seconds": elapsed}


async def hold(host: str, port: int, connections: int) -> None:
    writers = []
    for start in range(0, connections, 200):
        pairs = await asyncio.gather(*(handshake(host, port) for _ in range(start, min(connections, start + 200))))
        writers.extend(w for _, w in pairs)
    print(f"open {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("ports", nargs="+", type=int)
    for name in ("load", "hold"):
        p = sub.add_parser(name)
        p.add_argument("target")
        p.add_argument("--connections", type=int, default=50)
        p.add_argument("--window", type=int, default=16)
        p.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    raise_nofile()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.command == "serve":
        asyncio.run(serve(args.ports))
        return
    host, _, port = args.target.rpartition(":")
    if args.command == "load":
        print(json.dumps(asyncio.run(load(host, int(port), args.connections, args.window, args.seconds))))
    else:
        asyncio.run(hold(host, int(port), args.connections))


if __name__ == "__main__":
    main()
