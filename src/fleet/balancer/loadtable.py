"""Fleet-wide worker load for ``--proxy-processes N``: a table of counters in shared memory.

Least-connections must compare each worker's load across every proxy process, not one
process's share of it. The table is a shared ``mmap`` of an anonymous file (signed 64-bit
cells): one row per proxy process, two cells per worker column (in-flight HTTP requests, open
WebSockets). The rules that make it safe without a lock:

- one writer per cell: proxy process ``r`` writes only row ``r`` (an aligned 8-byte store,
  never torn on the platforms fleet runs on); the master writes a row only while no process
  owns it (it zeroes the row of a dead proxy process before its replacement starts);
- readers sum a column over the rows; the sum may be a few requests stale (another process
  is between its increment and its read), which least-connections tolerates: that staleness
  is why ``--worker-max-conns`` and the queue may overshoot by at most P-1 with P processes;
- the master hands out columns (``Columns``) and reuses a column only after its worker has
  been gone for ``REUSE_AFTER`` seconds and every row of it reads 0.

With one proxy process (the default) nothing here is used: ``UpstreamStats`` stays a plain
dataclass, and ``policy.UpstreamSet.choose`` reads its counts directly.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from typing import Any

from fleet.balancer.policy import UpstreamSet
from fleet.balancer.stats import ProxyStats, UpstreamStats

CELL = 8  # bytes: one signed 64-bit counter
COLUMNS = 1024  # workers (across generations) the table tracks at once
REUSE_AFTER = 60.0  # seconds a removed worker's column stays unused (late decrements land in it)


class LoadTable:
    """The shared block: an anonymous file (``memfd``) the master creates and maps, whose
    descriptor each proxy process inherits and maps too. Nothing has a name on disk, so nothing
    is left behind whatever kills whom."""

    def __init__(self, fd: int, rows: int, owner: bool) -> None:
        self.fd = fd
        self.rows = rows
        self.owner = owner
        self._map = mmap.mmap(fd, rows * COLUMNS * 2 * CELL)
        self._view = memoryview(self._map)
        self.cells: Any = self._view.cast("q")
        # Views handed out by column(), released with the table (the map cannot close while one
        # is exported); weak, so a forgotten worker's views go with its stats, not pile up here.
        self._columns: list[weakref.ref[Any]] = []

    @classmethod
    def create(cls, rows: int) -> "LoadTable":
        """A zeroed table for ``rows`` proxy processes (the master's)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("fleet-load", os.MFD_CLOEXEC)  # proxy processes get it via pass_fds
        else:  # pragma: no cover - non-Linux
            handle = tempfile.TemporaryFile()
            fd = os.dup(handle.fileno())
            handle.close()
        os.ftruncate(fd, rows * COLUMNS * 2 * CELL)  # a new file reads as zeros
        return cls(fd, rows, owner=True)

    @classmethod
    def attach(cls, fd: int, rows: int) -> "LoadTable":
        return cls(fd, rows, owner=False)

    def index(self, row: int, column: int) -> int:
        """Index of the in-flight cell of ``column`` in ``row`` (the WebSocket cell follows it)."""
        return (row * COLUMNS + column) * 2

    def column(self, column: int) -> tuple[Any, Any]:
        """Live views of ``column``'s in-flight cells and WebSocket cells over every row: the
        cells of one column are ``2 * COLUMNS`` apart, so each is a strided slice, and
        ``sum(view)`` adds a worker's count over the processes in C, with no index arithmetic
        or Python loop per read (least-connections reads it for every candidate, per request)."""
        stride = COLUMNS * 2
        views = (self.cells[column * 2::stride], self.cells[column * 2 + 1::stride])
        self._columns = [ref for ref in self._columns if ref() is not None] + [weakref.ref(v) for v in views]
        return views

    def active(self, column: int) -> int:
        stride = COLUMNS * 2
        return sum(self.cells[column * 2::stride])

    def websockets(self, column: int) -> int:
        stride = COLUMNS * 2
        return sum(self.cells[column * 2 + 1::stride])

    def zero_row(self, row: int) -> None:
        """Only while no process owns ``row``: a dead proxy process leaves no phantom load."""
        start = self.index(row, 0)
        for index in range(start, start + COLUMNS * 2):
            self.cells[index] = 0

    def close(self) -> None:
        for ref in self._columns:
            view = ref()
            if view is not None:
                view.release()
        self.cells.release()
        self._view.release()
        self._map.close()
        os.close(self.fd)


class Columns:
    """Which column each worker id has (the master's bookkeeping; pure but for ``now``)."""

    def __init__(self, table_active: Any, count: int = COLUMNS) -> None:
        self._busy = table_active  # column -> fleet-wide in-flight + websockets (LoadTable reader)
        self._of: dict[str, int] = {}
        self._fresh = list(range(count - 1, -1, -1))  # never used yet, lowest first from pop()
        self._retired: list[tuple[float, int]] = []  # (removed at, column)

    def get(self, worker_id: str) -> int | None:
        return self._of.get(worker_id)

    def assign(self, worker_id: str, now: float) -> int:
        column = self._of.get(worker_id)
        if column is not None:
            return column
        if self._fresh:
            column = self._fresh.pop()
        else:
            for position, (removed_at, candidate) in enumerate(self._retired):
                if now - removed_at >= REUSE_AFTER and not self._busy(candidate):
                    column = candidate
                    del self._retired[position]
                    break
            else:
                raise RuntimeError(f"more than {COLUMNS} workers in the proxy's load table at once")
        self._of[worker_id] = column
        return column

    def release(self, worker_id: str, now: float) -> None:
        column = self._of.pop(worker_id, None)
        if column is not None:
            self._retired.append((now, column))

    def items(self) -> list[tuple[str, int]]:
        return list(self._of.items())


class SharedUpstreamStats(UpstreamStats):
    """A worker's counters in one proxy process: its own in-flight and WebSocket counts live
    in its row of the table (the balancer's ``+= 1`` / ``-= 1`` write there), and ``load`` /
    ``fleet_active_requests`` read the whole column: what least-connections compares."""

    def __init__(self, worker_id: str, table: LoadTable, row: int, column: int) -> None:
        self._cells = table.cells
        self._own = table.index(row, column)
        self.fleet_active, self.fleet_websockets = table.column(column)  # live views, summed on read
        super().__init__(worker_id)

    @property  # type: ignore[override]
    def active_requests(self) -> int:
        return self._cells[self._own]

    @active_requests.setter
    def active_requests(self, value: int) -> None:
        self._cells[self._own] = value

    @property  # type: ignore[override]
    def websockets(self) -> int:
        return self._cells[self._own + 1]

    @websockets.setter
    def websockets(self, value: int) -> None:
        self._cells[self._own + 1] = value

    @property
    def load(self) -> int:
        return sum(self.fleet_active) + sum(self.fleet_websockets)

    @property
    def fleet_active_requests(self) -> int:
        return sum(self.fleet_active)


# The least-connections choice reads fleet-wide counts wherever a worker's stats are a
# SharedUpstreamStats (policy.load_of): one UpstreamSet serves one proxy process and many.
SharedUpstreamSet = UpstreamSet


class SharedProxyStats(ProxyStats):
    """A proxy process's counters; each worker's gauges live in the shared table at the
    column the master assigned (``columns``, set before the worker is added)."""

    def __init__(self, table: LoadTable, row: int) -> None:
        super().__init__()
        self.table = table
        self.row = row
        self.columns: dict[str, int] = {}

    def upstream(self, worker_id: str) -> UpstreamStats:
        stats = self.upstreams.get(worker_id)
        if stats is None:
            column = self.columns.get(worker_id)
            if column is None:  # not a worker the master announced: count it privately
                stats = UpstreamStats(worker_id)
            else:
                stats = SharedUpstreamStats(worker_id, self.table, self.row, column)
            self.upstreams[worker_id] = stats
        return stats


__all__ = ["COLUMNS", "Columns", "LoadTable", "SharedProxyStats", "SharedUpstreamSet", "SharedUpstreamStats"]
