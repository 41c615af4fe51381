"""The one state-table helper: built tables are checked, moves outside them raise."""

import enum

import pytest

from fleet.statetable import InvalidTransition, StateTable


class Light(enum.Enum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"


class Counter(enum.IntEnum):
    A = 1
    B = 2
    C = 3


def test_a_move_in_the_table_returns_the_target_and_one_outside_raises_with_both_names():
    table = StateTable("light", {Light.OFF: {Light.ON}, Light.ON: {Light.OFF, Light.BROKEN}, Light.BROKEN: set()})
    assert table.move(Light.OFF, Light.ON) is Light.ON
    with pytest.raises(InvalidTransition, match="light cannot go from broken to on"):
        table.move(Light.BROKEN, Light.ON)


def test_a_same_state_move_is_refused_unless_the_row_lists_it():
    table = StateTable("light", {Light.OFF: {Light.ON}, Light.ON: {Light.ON, Light.OFF}, Light.BROKEN: set()})
    assert table.move(Light.ON, Light.ON) is Light.ON
    with pytest.raises(InvalidTransition):
        table.move(Light.OFF, Light.OFF)


def test_a_table_without_a_row_for_every_state_or_with_a_foreign_target_is_refused():
    with pytest.raises(ValueError, match="no row for BROKEN"):
        StateTable("light", {Light.OFF: {Light.ON}, Light.ON: {Light.OFF}})
    with pytest.raises(ValueError, match="not Light members"):
        StateTable("light", {Light.OFF: {Counter.A}, Light.ON: set(), Light.BROKEN: set()})


def test_walk_bitmasks_final_states_and_reachability_agree_with_the_rows():
    rows = {Counter.A: {Counter.B}, Counter.B: {Counter.A, Counter.C}, Counter.C: set()}
    table = StateTable("counter", rows)
    pairs = list(table.walk())
    assert len(pairs) == 9
    masks = table.bitmasks()
    for source, target, allowed in pairs:
        assert allowed == (target in rows[source]) == bool(masks[source] >> target & 1)
    assert table.final_states() == {Counter.C}
    assert table.reachable(Counter.A) == {Counter.A, Counter.B, Counter.C}
    assert table.reachable(Counter.C) == {Counter.C}


def test_a_lifecycle_may_raise_its_own_subclass():
    class LightError(InvalidTransition):
        pass

    table = StateTable("light", {Light.OFF: set(), Light.ON: set(), Light.BROKEN: set()}, error=LightError)
    with pytest.raises(LightError) as raised:
        table.move(Light.OFF, Light.ON)
    assert raised.value.current is Light.OFF and raised.value.target is Light.ON
