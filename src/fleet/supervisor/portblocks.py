"""Port topology: the two blocks of worker ports that generations alternate between (pure).

Block 0 starts at ``--base-port``; block 1, the surge block, at ``--surge-base-port`` or, by
default, far enough above block 0 that a reload to twice the workers still fits and the proxy's
own ``--port`` stays outside both. Worker ``i`` of a block listens on ``block start + i``, so a
restarted worker keeps its port and ports never walk upward from reload to reload
(``supervisor.generations`` says which block a generation uses).

Imports nothing of fleet: the configuration validates the blocks with these functions, and the
supervisor places workers with them.
"""

from __future__ import annotations

MAX_PORT = 65535
# The default gap between the two blocks: room to scale up without the blocks meeting.
MIN_SPAN = 100


def default_surge_base(base_port: int, workers: int, proxy_port: int) -> int:
    """``base + max(100, workers)``, moved past the proxy port if that falls in the block, and
    below the base block if the block would pass 65535."""
    span = max(MIN_SPAN, workers)
    surge = base_port + span
    if surge <= proxy_port < surge + workers:
        surge = proxy_port + 1
    if surge + workers - 1 > MAX_PORT:
        surge = max(1, base_port - span)
        if surge <= proxy_port < surge + workers:
            surge = max(1, proxy_port - workers)
    return surge


def surge_base(base_port: int, workers: int, proxy_port: int, surge_base_port: int | None) -> int:
    """The first port of block 1: ``--surge-base-port`` when given, else the default."""
    if surge_base_port is not None:
        return surge_base_port
    return default_surge_base(base_port, workers, proxy_port)


def block_range(first: int, workers: int) -> range:
    """The ports of one block of ``workers`` workers."""
    return range(first, first + workers)


def overlaps(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


__all__ = ["MAX_PORT", "block_range", "default_surge_base", "overlaps", "surge_base"]
