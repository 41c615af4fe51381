"""``new_loop``: the event loop every fleet process runs (the master, ``fleet balance``, a proxy
process of ``--proxy-processes``): uvloop when installed, else asyncio's own.

Imports nothing of fleet, so a proxy process starts without importing the master's modules
(a restarted one is back sooner).
"""

from __future__ import annotations

import asyncio


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


__all__ = ["new_loop"]
