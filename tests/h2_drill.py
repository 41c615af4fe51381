"""The HTTP/2 fuzz drill: seeded hostile frames and header blocks against fleet's h2 side.

Each case is sent on a fresh TLS connection (ALPN h2, after a valid preface and SETTINGS) to a
``fleet up tests/apps/recorder.py`` with ``--allow-host fuzz.test``. What must hold:

- every case gets an answer within ``GIVE_UP_AFTER``: a status, RST_STREAM, GOAWAY or a close
  (no state without a timeout);
- a request refused by the proxy (its path ``/fz/N.0``) is never handled by a worker, and a
  request line hidden in a body (``/smuggled/N``) is never even parsed by one: one HTTP/2 field
  or DATA frame never becomes two HTTP/1.1 requests;
- between batches a normal request is answered 200 (the proxy keeps serving).

Kinds: line breaks and NULs in fields and pseudo-headers, connection-specific and uppercase
fields, broken pseudo-headers, foreign authorities, Content-Length that lies, request lines
hidden in bodies, random HPACK bytes, malformed frames, and short floods.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import time
from dataclasses import dataclass

import hpack

from h2client import H2Client, frame

GIVE_UP_AFTER = 4.0
HEADERS, DATA, PRIORITY, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 1, 0, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4
KINDS = ["crlf", "forbidden", "pseudo", "authority", "length", "smuggle", "hpack", "frames", "flood"]
BREAKS = [b"\r\n", b"\n", b"\r", b"\x00", b"\r\nx-injected: 1", b"\r\n\r\nGET /smuggled/%d HTTP/1.1\r\nhost: fuzz.test\r\n\r\n"]
FORBIDDEN = [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"),
             (b"keep-alive", b"5"), (b"proxy-connection", b"close"), (b"te", b"gzip"), (b"X-Upper", b"1"),
             (b"host ", b"fuzz.test"), (b"", b"x"), (b"x\x00y", b"1")]


@dataclass
class Case:
    kind: str
    number: int
    frames: list[bytes]
    refused: bool  # the proxy must not let it reach a worker


def _block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return hpack.Encoder().encode(fields)


def _request(number: int, index: int, method: bytes = b"GET", authority: bytes = b"fuzz.test",
             extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
            (b":path", b"/fz/%d.%d" % (number, index)), *(extra or [])]


def _case(rng: random.Random, number: int) -> Case:
    kind = KINDS[number % len(KINDS)]
    both = END_HEADERS | END_STREAM
    if kind == "crlf":
        brk = rng.choice(BREAKS).replace(b"%d", str(number).encode())
        where = rng.choice(["value", "path", "authority", "method"])
        fields = _request(number, 0)
        if where == "value":
            fields.append((b"x-fuzz", b"a" + brk + b"b"))
        else:
            slot = {"path": 3, "authority": 2, "method": 0}[where]
            fields[slot] = (fields[slot][0], fields[slot][1] + brk)
        return Case(kind, number, [frame(HEADERS, both, 1, _block(fields))], True)
    if kind == "forbidden":
        return Case(kind, number, [frame(HEADERS, both, 1, _block(_request(number, 0, extra=[rng.choice(FORBIDDEN)])))],
                    True)
    if kind == "pseudo":
        fields = _request(number, 0)
        choice = rng.randrange(6)
        if choice == 0:
            fields.append((b":path", b"/fz/%d.0" % number))
        elif choice == 1:
            fields = [(b"x-a", b"1"), *fields]
        elif choice == 2:
            fields.append((b":foo", b"bar"))
        elif choice == 3:
            fields = fields[1:]
        elif choice == 4:
            fields.append((b":status", b"200"))
        else:
            fields.append((b":protocol", b"websocket"))
        return Case(kind, number, [frame(HEADERS, both, 1, _block(fields))], True)
    if kind == "authority":
        authority = rng.choice([b"evil.test", b"fuzz.test.evil.test", b"fuzz.test:1", b"user@fuzz.test", b"a b"])
        extra = [(b"host", b"evil.test")] if rng.random() < 0.3 else []
        return Case(kind, number, [frame(HEADERS, both, 1, _block(_request(number, 0, authority=authority, extra=extra)))],
                    True)
    if kind == "length":
        declared, sent = rng.choice([(5, 10), (10, 2), (0, 1), (1, 0)])
        head = frame(HEADERS, END_HEADERS, 1, _block(_request(number, 0, b"POST", extra=[(b"content-length", b"%d" % declared)])))
        return Case(kind, number, [head, frame(DATA, END_STREAM, 1, b"x" * sent)], True)
    if kind == "smuggle":
        hidden = b"0\r\n\r\nGET /smuggled/%d HTTP/1.1\r\nhost: fuzz.test\r\n\r\n" % number
        extra = [(b"content-length", b"%d" % len(hidden))] if rng.random() < 0.5 else []
        head = frame(HEADERS, END_HEADERS, 1, _block(_request(number, 1, b"POST", extra=extra)))
        return Case(kind, number, [head, frame(DATA, END_STREAM, 1, hidden)], False)
    if kind == "hpack":
        return Case(kind, number, [frame(HEADERS, both, 1, rng.randbytes(rng.randrange(1, 64)))], True)
    if kind == "frames":
        bad = rng.choice([
            frame(SETTINGS, 0, 0, b"\x00" * 5), frame(PING, 0, 0, b"1234567"), frame(WINDOW_UPDATE, 0, 0, b"\x00" * 4),
            frame(DATA, 0, 0, b"x"), frame(HEADERS, both, 2, _block(_request(number, 0))), frame(RST, 0, 0, b"\x00" * 4),
            frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)) * 2, frame(DATA, END_STREAM, 7, b"x"),
            frame(PRIORITY, 0, 1, b"\x00\x00\x00\x01\x10"), frame(rng.randrange(10, 256), rng.randrange(256), 1, b"") +
            frame(HEADERS, both, 1, _block(_request(number, 0, authority=b"evil.test"))),
            frame(CONTINUATION, END_HEADERS, 1, b"\x82"), frame(HEADERS, both, 1, b"\x00" * 20000),
        ])
        return Case(kind, number, [bad], True)
    flood = rng.choice([frame(PING, 0, 0, b"12345678"), frame(SETTINGS, 0, 0), frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01")])
    return Case(kind, number, [flood * 1100, frame(HEADERS, both, 1, _block(_request(number, 0, authority=b"evil.test")))],
                True)


def hostile_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    return [_case(rng, number) for number in range(count)]


def send_case(port: int, case: Case) -> str:
    """Send one case on a fresh connection; how it ended (``status NNN``, ``reset N``,
    ``goaway N``, ``closed``), or ``no answer`` after ``GIVE_UP_AFTER``. The answer is read
    frame by frame here: the cases open streams the client library never heard of."""
    with H2Client(port, timeout=GIVE_UP_AFTER) as client:
        for data in case.frames:
            try:
                client.raw(data)
            except OSError:
                break
        decoder = hpack.Decoder()
        buffer = b""
        deadline = time.monotonic() + GIVE_UP_AFTER
        while time.monotonic() < deadline:
            client.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = client.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                return "closed"
            buffer += data
            while len(buffer) >= 9:
                size = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + size:
                    break
                kind, stream_id = buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9:9 + size], buffer[9 + size:]
                if kind == HEADERS and stream_id == 1:
                    fields = dict(decoder.decode(payload, raw=True))
                    return f"status {int(fields[b':status'])}"
                if kind == RST and stream_id == 1:
                    return f"reset {int.from_bytes(payload[:4], 'big')}"
                if kind == GOAWAY:
                    return f"goaway {int.from_bytes(payload[4:8], 'big')}"
        return "no answer"


__all__ = ["Case", "hostile_cases", "send_case"]
