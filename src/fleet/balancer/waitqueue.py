"""The requests no worker can take now (none ready, or every one at ``--worker-max-conns``),
oldest first: one per balancer, bounded, and the ``queued`` gauge kept with it.

A request joins with ``add`` (its exchange is QUEUED) and leaves when ``wake`` gives it to a
worker, its wait times out (``--queue-timeout``: the sweep answers 503), or its client goes
(``remove``). ``wake`` runs when a worker may have room: a request ended, a worker became
ready, or the sweep (a worker kept out by a connect error is back once its time passes, with
no event to say so).
"""

from __future__ import annotations

from collections import deque

from fleet.balancer.contracts import Waiter
from fleet.balancer.exchange import Exchange
from fleet.balancer.stats import ProxyStats

# Requests waiting for a worker, in all: past this a request gets 503 at once (HAProxy has
# no such bound; fleet's --max-connections is the other one).
QUEUE_LIMIT = 4096


class WaitQueue:
    """``size`` is a plain attribute: the end of every request reads it ("anyone waiting?")."""

    __slots__ = ("_entries", "_stats", "size")

    def __init__(self, stats: ProxyStats) -> None:
        self._entries: deque[tuple[Waiter, Exchange]] = deque()
        self._stats = stats
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def full(self) -> bool:
        return self.size >= QUEUE_LIMIT

    def add(self, waiter: Waiter, exchange: Exchange) -> None:
        self._entries.append((waiter, exchange))
        self._count()

    def remove(self, waiter: Waiter, exchange: Exchange) -> None:
        try:
            self._entries.remove((waiter, exchange))
        except ValueError:
            pass
        self._count()

    def wake(self) -> None:
        """A worker may have room now: hand waiting requests to workers, oldest first."""
        entries = self._entries
        for _ in range(len(entries)):
            waiter, exchange = entries.popleft()
            if not waiter.try_dispatch_queued(exchange):
                entries.append((waiter, exchange))
        self._count()

    def _count(self) -> None:
        self.size = self._stats.queued = len(self._entries)


__all__ = ["QUEUE_LIMIT", "WaitQueue"]
