"""Readiness: a worker is ready when its port accepts a connection, or ``--health-path`` answers 2xx.

The probe only reads; it never decides what to do with a worker that is not ready. Its
timeouts come from ``fleet.tasks`` (never ``asyncio.wait_for``), so cancelling a probe always
ends it.
"""

from __future__ import annotations

import asyncio
import time

from fleet.tasks import with_timeout


async def probe_once(host: str, port: int, health_path: str | None, timeout: float = 2.0) -> bool:
    """One attempt: True if ready now."""
    try:
        reader, writer = await with_timeout(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        if health_path is None:
            return True
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(
            f"GET {health_path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: fleet-probe\r\n"
            f"Connection: close\r\n\r\n".encode("latin-1")
        )
        status_line = await with_timeout(reader.readline(), timeout)
        parts = status_line.split(None, 2)
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].startswith(b"2")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the worker closed first; nothing to clean up


async def wait_ready(host: str, port: int, health_path: str | None, timeout: float) -> bool:
    """Probe until ready or ``timeout`` seconds pass; polls fast first, then every 0.25 s."""
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        if await probe_once(host, port, health_path, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(interval, remaining))
        interval = min(0.25, interval * 2)
