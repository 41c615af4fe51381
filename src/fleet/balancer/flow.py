"""Reading paused for reasons: one small helper used by both sides of the proxy.

A connection stops reading its socket for several independent reasons (the peer's socket is
full, request bytes wait for a worker, too many pipelined requests, an Upgrade waits for its
101, a refusal is being written). Each is a bit; reading resumes only when no bit is left, so
one reason ending never undoes another (uvicorn's ``FlowControl`` has one reason; fleet has
several).
"""

from __future__ import annotations

from typing import Any

PEER_FULL = 1  # the socket this side's bytes go to is full
BUFFERED = 2  # --max-buffered-request bytes are held for a worker
PIPELINE = 4  # requests parsed ahead of the one being answered, or nothing more may be read
UPGRADE = 8  # an Upgrade head waits for the worker's 101 and its held bytes are at the bound


class ReadFlow:
    """Pause/resume ``transport.pause_reading`` by reason bits."""

    __slots__ = ("transport", "reasons")

    def __init__(self) -> None:
        self.transport: Any = None
        self.reasons = 0

    def pause(self, reason: int) -> None:
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def paused(self, reason: int) -> bool:
        return bool(self.reasons & reason)


__all__ = ["BUFFERED", "PEER_FULL", "PIPELINE", "ReadFlow", "UPGRADE"]
