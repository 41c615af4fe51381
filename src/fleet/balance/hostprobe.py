"""One health probe of one host: ``GET /_fleet/health/ready``, and which host answered.

2xx is ready; the JSON body's ``host_id`` (``fleet up --host-id``) names the host. Bounded in
time (``PROBE_TIMEOUT`` for the whole exchange) and size (``MAX_ANSWER`` bytes read), so a host
that hangs or babbles cannot hold the prober.
"""

from __future__ import annotations

import asyncio
import json

from fleet.health import READY_PATH
from fleet.rules import HOST_ID
from fleet.tasks import with_timeout

PROBE_TIMEOUT = 2.0
MAX_ANSWER = 16 * 1024  # the ready answer is under 200 bytes


def parse_answer(raw: bytes) -> tuple[bool, str | None]:
    """(ready, host id) from a whole HTTP/1.x response (head and body), never raising."""
    head, _, body = raw.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(None, 2)
    ready = len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].startswith(b"2")
    host_id = None
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("host_id"), str) and HOST_ID.match(data["host_id"]):
        host_id = data["host_id"]
    return ready, host_id


async def _exchange(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(f"GET {READY_PATH} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: fleet-balance\r\n"
                     f"Connection: close\r\n\r\n".encode("latin-1"))
        chunks: list[bytes] = []
        size = 0
        while size < MAX_ANSWER:
            chunk = await reader.read(MAX_ANSWER - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


async def probe_host(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str | None]:
    """(ready, host id); (False, None) for a host that does not answer in time."""
    try:
        raw = await with_timeout(_exchange(host, port), timeout)
    except (OSError, TimeoutError):
        return False, None
    return parse_answer(raw)


__all__ = ["MAX_ANSWER", "PROBE_TIMEOUT", "parse_answer", "probe_host"]
