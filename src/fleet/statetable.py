"""One helper for every lifecycle in fleet: an Enum of states and the table of allowed moves.

Each lifecycle (an exchange, a worker, a worker's intent, a reload, a proxy process, a managed
data-plane server) declares its table once with ``StateTable(name, {STATE: {targets}})``. The
table is checked when it is built (every member of the enum has a row; every target is a
member), a move that is not in the table raises ``InvalidTransition`` naming the lifecycle and
both states, and a same-state move is refused unless the row lists the state itself, so "it
was already there" is a decision written in the table, never an accident.

Pure: no I/O, no clock, imports nothing of fleet. ``walk()`` yields every (source, target,
allowed) pair so a unit test can go through a whole table in one loop.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.Enum)


class InvalidTransition(RuntimeError):
    """A move that a lifecycle's table does not allow: a bug in fleet, never a user's doing."""

    def __init__(self, lifecycle: str, current: enum.Enum, target: enum.Enum) -> None:
        super().__init__(f"{lifecycle} cannot go from {_label(current)} to {_label(target)}")
        self.lifecycle = lifecycle
        self.current = current
        self.target = target


def _label(state: enum.Enum) -> str:
    return state.value if isinstance(state.value, str) else state.name


class StateTable(Generic[S]):
    """The allowed moves of one lifecycle. ``move(current, target)`` returns ``target`` or raises."""

    __slots__ = ("name", "states", "_moves", "error")

    def __init__(self, name: str, moves: Mapping[S, Iterable[S]], *,
                 error: type[InvalidTransition] = InvalidTransition) -> None:
        if not moves:
            raise ValueError(f"{name}: a state table needs at least one row")
        enum_type = type(next(iter(moves)))
        missing = [member for member in enum_type if member not in moves]
        if missing:
            raise ValueError(f"{name}: no row for {', '.join(m.name for m in missing)}")
        table: dict[S, frozenset[S]] = {}
        for source, targets in moves.items():
            frozen = frozenset(targets)
            strangers = [t for t in frozen if not isinstance(t, enum_type)]
            if strangers:
                raise ValueError(f"{name}: {source.name} lists {strangers!r}, not {enum_type.__name__} members")
            table[source] = frozen
        self.name = name
        self.states: tuple[S, ...] = tuple(enum_type)  # type: ignore[arg-type]
        self._moves = table
        self.error = error

    def allows(self, current: S, target: S) -> bool:
        return target in self._moves[current]

    def move(self, current: S, target: S) -> S:
        """``target`` if the table allows ``current -> target``; raise ``self.error`` otherwise."""
        if target not in self._moves[current]:
            raise self.error(self.name, current, target)
        return target

    def targets(self, state: S) -> frozenset[S]:
        return self._moves[state]

    def final_states(self) -> frozenset[S]:
        """States with no way out (a lifecycle's ends)."""
        return frozenset(s for s, targets in self._moves.items() if not targets)

    def reachable(self, start: S) -> frozenset[S]:
        """Every state some sequence of allowed moves leads to from ``start`` (itself included)."""
        seen = {start}
        frontier = [start]
        while frontier:
            for target in self._moves[frontier.pop()]:
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        return frozenset(seen)

    def bitmasks(self) -> list[int]:
        """For an IntEnum table on a hot path: one int per state value, bit ``t`` set where the
        move to the state numbered ``t`` is allowed (a list index and a shift beat two hashes)."""
        values = [int(s.value) for s in self.states]
        masks = [0] * (max(values) + 1)
        for source, targets in self._moves.items():
            masks[int(source.value)] = sum(1 << int(t.value) for t in targets)
        return masks

    def as_dict(self) -> dict[S, frozenset[S]]:
        return dict(self._moves)

    def walk(self) -> Iterator[tuple[S, S, bool]]:
        """Every ordered pair of states, and whether the table allows the move."""
        for source in self.states:
            for target in self.states:
                yield source, target, target in self._moves[source]


__all__ = ["InvalidTransition", "StateTable"]
