"""Generations: worker ids, the two port blocks, the reload plan and recycling decisions (pure).

A *generation* is one set of workers started together: fleet's first start is generation 1,
each reload starts the next one, and each recycle (``--max-requests``, ``--max-age``,
``--max-memory``) starts a one-worker generation of its own, since the replacement loads the
APP's code afresh. A worker's id is ``g<generation>w<index>`` (``g3w1``): unique across
generations and without ``.``, so it can prefix a Bokeh session id. A crash restart keeps the
id: affinity cookies still name the worker that took over.

Ports come in two fixed blocks, ``--base-port`` (block 0) and ``--surge-base-port`` (block 1).
A replacement for index ``i`` starts on the block that index is not using, so the old worker
keeps its port while it drains, and ports never walk upward from reload to reload.

Metrics label workers by *slot*, the port they occupy: ``w<i>`` in the base block and
``s<i>`` in the surge block. At most one worker holds a port, so the label is unique at any
time, and the number of series stays 2 x workers however many reloads happen;
``fleet_worker_info{worker,generation}`` says which generation holds each slot.

``GenerationNumbers`` is the one place a generation number is made: a reload, a recycle (a
one-worker ``ReloadPlan``), a scale-up and the ``--no-proxy`` in-place reload all take theirs
from it. ``ReloadPlan`` is the life of one reload as an enum and a transition table (like
``supervisor.policy``), unit-tested without processes; ``recycle_reason`` decides recycling.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from fleet.statetable import InvalidTransition, StateTable

_WORKER_ID = re.compile(r"g([1-9][0-9]*)w([0-9]+)")


def worker_id(generation: int, index: int) -> str:
    return f"g{generation}w{index}"


def parse_worker_id(text: str) -> tuple[int, int] | None:
    """(generation, index) of ``g3w1``; None for anything else."""
    match = _WORKER_ID.fullmatch(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def slot_label(block: int, index: int) -> str:
    """The metrics ``worker`` label of the port ``index`` of ``block`` (0 base, 1 surge)."""
    return f"{'w' if block == 0 else 's'}{index}"


def other_block(block: int) -> int:
    return 1 - block


class ReloadPhase(enum.Enum):
    PLANNED = "planned"
    ENDING_OLD_DRAIN = "ending-old-drain"  # a previous generation still holds the target ports
    STARTING = "starting"  # new workers start, --reload-batch at a time
    SWITCHED = "switched"  # every new worker is ready; the old generation drains; final
    ROLLING_BACK = "rolling-back"  # a new worker could not start: stop the new ones
    FAILED = "failed"  # the old generation serves on, unchanged; final


_P = ReloadPhase
RELOAD_TRANSITIONS: dict[ReloadPhase, frozenset[ReloadPhase]] = {
    _P.PLANNED: frozenset({_P.ENDING_OLD_DRAIN, _P.STARTING, _P.FAILED}),
    _P.ENDING_OLD_DRAIN: frozenset({_P.STARTING, _P.FAILED}),
    _P.STARTING: frozenset({_P.STARTING, _P.SWITCHED, _P.ROLLING_BACK}),
    _P.ROLLING_BACK: frozenset({_P.FAILED}),
    _P.SWITCHED: frozenset(),
    _P.FAILED: frozenset(),
}


class InvalidReloadStep(InvalidTransition):
    """The reload tried a step its table does not allow (a fleet bug)."""


# STARTING -> STARTING is a move of its own: a batch is ready and the next one starts.
RELOAD_LIFECYCLE = StateTable("reload", RELOAD_TRANSITIONS, error=InvalidReloadStep)


class GenerationNumbers:
    """Hands out generation numbers, each once and in order: the only place one is made.

    ``upcoming`` is the number the next operation will use; ``take`` uses it once its workers
    are about to start (a reload refused before that, a taken port, leaves it unused)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0  # the last number used; 0 before the first start

    @property
    def upcoming(self) -> int:
        return self.last + 1

    def take(self, generation: int | None = None) -> int:
        """Use ``generation`` (default: ``upcoming``); it must be the upcoming one."""
        wanted = self.upcoming if generation is None else generation
        if wanted != self.upcoming:
            raise ValueError(f"generation {wanted} is not the next one ({self.upcoming})")
        self.last = wanted
        return wanted


@dataclass(frozen=True)
class Placement:
    """Where one new worker goes."""

    index: int
    block: int


@dataclass
class ReloadPlan:
    """One reload: which workers to start in which block, in which batches, and what next.

    ``current`` maps each index to the block its serving worker uses; ``draining_blocks``
    lists (index, block) ports still held by workers of an older generation that drains.
    """

    generation: int
    current: dict[int, int]
    batch_size: int
    draining_ports: frozenset[tuple[int, int]] = frozenset()
    phase: ReloadPhase = ReloadPhase.PLANNED
    ready: set[int] = field(default_factory=set)
    failure: str | None = None
    _next_batch: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    @classmethod
    def one_worker(cls, generation: int, index: int, block: int,
                   draining_ports: frozenset[tuple[int, int]] = frozenset()) -> "ReloadPlan":
        """A recycle: one replacement for the worker of ``index`` on ``block``, in the other block."""
        return cls(generation, {index: block}, 1, draining_ports)

    def _go(self, phase: ReloadPhase) -> None:
        self.phase = RELOAD_LIFECYCLE.move(self.phase, phase)

    @property
    def placements(self) -> list[Placement]:
        return [Placement(index, other_block(block)) for index, block in sorted(self.current.items())]

    def blocking_drains(self) -> list[tuple[int, int]]:
        """Ports of an older draining generation that the new workers need."""
        wanted = {(p.index, p.block) for p in self.placements}
        return sorted(wanted & self.draining_ports)

    def begin(self) -> ReloadPhase:
        """PLANNED -> ENDING_OLD_DRAIN (if an older drain holds a needed port) or STARTING."""
        self._go(_P.ENDING_OLD_DRAIN if self.blocking_drains() else _P.STARTING)
        return self.phase

    def old_drain_ended(self) -> None:
        self._go(_P.STARTING)

    def fail_before_start(self, reason: str) -> None:
        self.failure = reason
        self._go(_P.FAILED)

    def batches(self) -> list[list[Placement]]:
        placements = self.placements
        return [placements[i:i + self.batch_size] for i in range(0, len(placements), self.batch_size)]

    def next_batch(self) -> list[Placement] | None:
        """The next batch to start, or None once every worker is ready (SWITCHED)."""
        if self.phase is _P.SWITCHED:
            return None
        if self.phase is not _P.STARTING:  # not begun, or rolled back: no batch may start
            raise InvalidReloadStep(RELOAD_LIFECYCLE.name, self.phase, _P.STARTING)
        batches = self.batches()
        if self._next_batch >= len(batches):
            return None
        batch = batches[self._next_batch]
        self._next_batch += 1
        return batch

    def batch_ready(self, indices: Sequence[int]) -> ReloadPhase:
        """The batch's workers are ready: STARTING again, or SWITCHED after the last batch."""
        self.ready.update(indices)
        done = self.ready >= set(self.current)
        self._go(_P.SWITCHED if done else _P.STARTING)
        return self.phase

    def batch_failed(self, reason: str) -> None:
        """A new worker cannot start: roll back (stop the new ones), then FAILED."""
        self.failure = reason
        self._go(_P.ROLLING_BACK)

    def rolled_back(self) -> None:
        self._go(_P.FAILED)


class RecycleReason(enum.Enum):
    """Why a worker is replaced on purpose (the ``reason`` label of fleet_worker_recycles_total)."""

    MAX_REQUESTS = "max_requests"
    MAX_AGE = "max_age"
    MAX_MEMORY = "max_memory"  # soft: a new worker starts, the old one drains
    MAX_MEMORY_HARD = "max_memory_hard"  # killed at once, restarted on its port
    HUNG = "hung"  # its event loop is stuck: killed at once, restarted on its port

    @property
    def graceful(self) -> bool:
        """True: start a replacement and drain; False: kill now and restart in place."""
        return self not in (RecycleReason.MAX_MEMORY_HARD, RecycleReason.HUNG)


@dataclass(frozen=True)
class RecycleLimits:
    max_requests: int = 0  # this worker's limit, jitter included; 0 = off
    max_age: float = 0.0  # seconds since ready; 0 = off
    max_memory: int | None = None
    max_memory_hard: int | None = None


def recycle_reason(limits: RecycleLimits, *, requests: int | None, ready_for: float | None,
                   rss: int | None) -> RecycleReason | None:
    """The first limit a worker has passed, hard memory first (it cannot wait for a drain)."""
    if limits.max_memory_hard and rss is not None and rss > limits.max_memory_hard:
        return RecycleReason.MAX_MEMORY_HARD
    if limits.max_memory and rss is not None and rss > limits.max_memory:
        return RecycleReason.MAX_MEMORY
    if limits.max_requests and requests is not None and requests >= limits.max_requests:
        return RecycleReason.MAX_REQUESTS
    if limits.max_age and ready_for is not None and ready_for >= limits.max_age:
        return RecycleReason.MAX_AGE
    return None


def scale_placements(current: dict[int, int], held: frozenset[tuple[int, int]] | set[tuple[int, int]],
                     workers: int) -> list[Placement]:
    """Where the new indices of a scale-up to ``workers`` go: the block the serving workers use
    (``current``: index -> block), or the other one where a draining worker still holds it."""
    block = current[min(current)] if current else 0
    return [Placement(i, block if (i, block) not in held else other_block(block))
            for i in range(workers) if i not in current]


def port_list(ports: Iterable[int]) -> str:
    """``5101-5104`` for a run of ports, ``5101, 5203`` otherwise (for the reload's messages)."""
    ordered = sorted(ports)
    if ordered == list(range(ordered[0], ordered[0] + len(ordered))):
        return f"{ordered[0]}-{ordered[-1]}" if len(ordered) > 1 else str(ordered[0])
    return ", ".join(map(str, ordered))


def request_limit(max_requests: int, jitter: int, draw: int) -> int:
    """A worker's own ``--max-requests``: ``max_requests + draw % (jitter + 1)``; 0 stays off."""
    if not max_requests:
        return 0
    return max_requests + (draw % (jitter + 1) if jitter else 0)


__all__ = [
    "worker_id", "parse_worker_id", "slot_label", "other_block", "ReloadPhase", "RELOAD_TRANSITIONS",
    "RELOAD_LIFECYCLE", "GenerationNumbers", "ReloadPlan", "scale_placements", "port_list", "Placement", "InvalidReloadStep", "RecycleReason", "RecycleLimits",
    "recycle_reason", "request_limit",
]
