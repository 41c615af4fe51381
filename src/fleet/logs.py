"""What ``fleet logs`` reads: the last lines of each worker (and of fleet itself), kept in
memory by the master, so it works from any directory and without ``--log-dir``. And
``--log-json``: fleet's output as one JSON object per line, for log shippers.

``RecordingOutput`` is the master's ``Output``: every line that reaches fleet's output passes
here, so the supervisor and the relays need no change. A worker's line is ``<id>:<port> | ...``
and is filed under ``<id>``; fleet's own ``fleet | ...`` lines under ``fleet``.

Bounds: ``LINES_PER_WORKER`` lines per worker, each cut to ``MAX_STORED_LINE`` bytes, and
at most ``MAX_WORKERS`` rings (worker ids change across generations; the rings of the longest
silent ids are dropped first).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, TextIO

from fleet.logfiles import Rotation
from fleet.supervisor.process import Output

LINES_PER_WORKER = 1000
MAX_STORED_LINE = 4096
MAX_WORKERS = 256
FLEET = "fleet"


@dataclass(frozen=True)
class Entry:
    seq: int
    time: float
    worker: str
    text: str  # as printed on fleet's output: "w1:5101 | line" or "fleet | message"

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "worker": self.worker, "text": self.text}


def split_line(text: str) -> tuple[str, str, str]:
    """(worker id, label, message) of a line of fleet's output; worker id ``fleet`` for fleet's own."""
    label, sep, message = text.partition(" | ")
    if not sep or " " in label:
        return FLEET, FLEET, text
    return label.split(":", 1)[0], label, message


class LogStore:
    """Bounded rings of recent lines per worker, numbered by one sequence for ``-f``."""

    def __init__(self, lines_per_worker: int = LINES_PER_WORKER, max_workers: int = MAX_WORKERS) -> None:
        self._lines = lines_per_worker
        self._max_workers = max_workers
        self._rings: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._seq = 0

    def add(self, worker: str, text: str, now: float | None = None) -> None:
        if len(text) > MAX_STORED_LINE:
            text = text[:MAX_STORED_LINE] + "…"
        self._seq += 1
        ring = self._rings.get(worker)
        if ring is None:
            ring = self._rings[worker] = deque(maxlen=self._lines)
            while len(self._rings) > self._max_workers:
                self._rings.popitem(last=False)
        self._rings.move_to_end(worker)
        ring.append(Entry(self._seq, time.time() if now is None else now, worker, text))

    def known(self, worker: str) -> bool:
        return worker in self._rings

    def workers(self) -> list[str]:
        return sorted(self._rings)

    def read(self, worker: str | None, count: int, after: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The last ``count`` entries newer than ``after`` (of one worker or all), oldest first,
        and the newest sequence number (the ``after`` of the next ``-f`` poll)."""
        rings = [self._rings[worker]] if worker is not None else list(self._rings.values())
        chosen: list[Entry] = []
        for ring in rings:
            newer = [entry for entry in ring if entry.seq > after]
            chosen.extend(newer[-count:] if count else [])
        chosen.sort(key=lambda entry: entry.seq)
        return [entry.as_dict() for entry in chosen[-count:]] if count else [], self._seq


def json_line(text: str, now: float) -> str:
    worker, label, message = split_line(text)
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "source": "fleet" if worker == FLEET else "worker",
        "message": message,
    }
    if worker != FLEET:
        record["worker"] = worker
        record["label"] = label
    elif message.startswith("error: ") or message.startswith("warning: "):
        record["level"] = message.split(":", 1)[0]
    return json.dumps(record, ensure_ascii=False)


class RecordingOutput(Output):
    """fleet's output, recording each line for ``fleet logs`` (and as JSON with --log-json)."""

    def __init__(self, stream: TextIO | None = None, *, as_json: bool = False,
                 log_rotation: Rotation | None = None, store: LogStore | None = None) -> None:
        super().__init__(stream)
        self.logs = store or LogStore()
        self.as_json = as_json
        self.log_rotation = log_rotation

    def write_line(self, text: str) -> None:
        now = time.time()
        worker = split_line(text)[0]
        self.logs.add(worker, text, now)
        super().write_line(json_line(text, now) if self.as_json else text)


__all__ = ["Entry", "LogStore", "RecordingOutput", "json_line", "split_line", "LINES_PER_WORKER"]
