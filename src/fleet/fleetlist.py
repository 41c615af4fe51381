"""The ``fleet ls`` table: one row per running fleet (pure formatting, no I/O)."""

from __future__ import annotations

import time
from typing import Iterable

from fleet.control import duration
from fleet.discovery import FleetEntry

HEADER = ("NAME", "PID", "PORT", "WORKERS", "UPTIME", "APP")


def format_fleets(fleets: Iterable[FleetEntry], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [HEADER]
    for entry in fleets:
        rows.append((
            entry.name, str(entry.pid), str(entry.port) if entry.port else "-",
            f"{entry.ready}/{entry.workers}", duration(max(0.0, now - entry.started_at)), entry.app,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in rows)


__all__ = ["format_fleets", "HEADER"]
