"""The Recycling section of fleet's settings.

When a healthy worker is replaced anyway: by memory, by requests answered, by age. Read by the
recycler (``config.recycling``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import option
from fleet.values import parse_count, parse_duration, parse_size


@dataclass(frozen=True)
class RecyclingSettings:
    """The Recycling section (``config.recycling``); frozen."""

    max_memory: int | None = option(
        None, "--max-memory", parse=parse_size, metavar="SIZE",
        help="Soft limit: replace a worker whose process tree uses more memory than this "
             "(a new worker starts, the old one drains).",
    )
    max_memory_hard: int | None = option(
        None, "--max-memory-hard", parse=parse_size, metavar="SIZE",
        help="Hard limit: kill at once a worker whose process tree uses more memory than this.",
    )
    max_requests: int = option(
        0, "--max-requests", parse=parse_count, metavar="N",
        help="Replace a worker after it answered about N requests (counted by the proxy; "
             "not with --no-proxy). 0: off.",
    )
    max_requests_jitter: int = option(
        0, "--max-requests-jitter", parse=parse_count, metavar="N",
        help="Add 0..N (random, per worker) to --max-requests so workers do not recycle together.",
    )
    max_age: float = option(
        0.0, "--max-age", parse=parse_duration, metavar="SECONDS",
        help="Replace a worker that has been ready this long. 0: off.",
    )


__all__ = ["RecyclingSettings"]
