"""The upgrade's pure parts: the state format (a stored v1 state must stay readable by every
later release), the upgrade lifecycle table, the preflight verdict and the CLI's outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.statetable import InvalidTransition
from fleet.upgrade.client import outcome
from fleet.upgrade.handover import PHASES, Phase, Upgrades
from fleet.upgrade.preflight import parse
from fleet.upgrade.state import READABLE, VERSION, StateError, UpgradeState, dump, load

V1 = Path(__file__).resolve().parent / "data" / "upgrade_state_v1.json"


def test_a_stored_version_1_state_is_read() -> None:
    state = load(V1.read_bytes())
    assert 1 in READABLE
    assert state.written_by == "0.1.0" and state.generation == 3 and state.desired == 2
    assert [w.pid for w in state.workers] == [4300, 4301]
    assert state.workers[1].spawns == 3 and state.workers[1].heartbeat_fd is None
    assert state.tunnels[0].worker_id == "g3w0" and (state.tunnels[0].client_fd, state.tunnels[0].worker_fd) == (24, 25)
    assert state.watchdog is not None and state.watchdog.pid == 4242
    assert sorted(state.fds()) == [17, 18, 19, 20, 21, 22, 23, 24, 25, 26]
    assert state.bokeh_environment == [["BOKEH_SECRET_KEY", "kept-secret"]]


def test_what_is_written_is_read_back() -> None:
    state = load(V1.read_bytes())
    again = load(dump(state))
    assert again == state and again.version == VERSION


@pytest.mark.parametrize("change, message", [
    ({"version": 99}, "version 99 is not readable"),
    ({"format": "other"}, "not a fleet upgrade state"),
    ({"workers": "none"}, "workers is missing"),
    ({"workers": [{"pid": 1}]}, "upgrade state:"),
])
def test_a_state_this_release_cannot_read_is_refused_with_the_reason(change: dict, message: str) -> None:
    data = {**json.loads(V1.read_text()), **change}
    with pytest.raises(StateError, match=message):
        load(json.dumps(data).encode())
    with pytest.raises(StateError, match="not JSON"):
        load(b"{")


def test_the_upgrade_lifecycle_table() -> None:
    allowed = {(a, b) for a, b, ok in PHASES.walk() if ok}
    assert allowed == {(Phase.IDLE, Phase.PREFLIGHT), (Phase.PREFLIGHT, Phase.IDLE),
                       (Phase.PREFLIGHT, Phase.QUIESCING), (Phase.QUIESCING, Phase.IDLE),
                       (Phase.QUIESCING, Phase.EXECUTING), (Phase.EXECUTING, Phase.IDLE)}
    with pytest.raises(InvalidTransition):
        Upgrades().move(Phase.EXECUTING)


def test_upgrades_are_counted_and_carried_over() -> None:
    upgrades = Upgrades()
    upgrades.record("refused", "broken", ("1.0", "1.1"), now=10.0)
    later = Upgrades()
    later.restore(upgrades.as_data())
    later.record("done", "ok", ("1.0", "1.1"), now=20.0)
    assert later.counts == {"done": 1, "refused": 1, "failed": 0}
    assert later.status()["last"]["result"] == "done" and len(later.status()["history"]) == 2


def test_the_preflight_verdict() -> None:
    good = parse(0, b'{"version": "1.1", "reads": [1]}\nconfiguration OK\n', needs=1)
    assert good.ok and good.version == "1.1"
    assert not parse(1, b'{"version": "1.1", "reads": [1]}\nTraceback ...\n', needs=1).ok
    assert not parse(1, b"Traceback (most recent call last):\nImportError: x\n", needs=1).ok
    cannot_read = parse(0, b'{"version": "2.0", "reads": [2]}\n', needs=1)
    assert not cannot_read.ok and "cannot read upgrade state version 1" in cannot_read.output


def test_the_cli_waits_for_the_upgrade_it_asked_for() -> None:
    status = {"upgrade": {"last": {"time": 5.0, "result": "done"}}}
    assert outcome(status, 6.0) is None
    assert outcome(status, 5.0) == {"time": 5.0, "result": "done"}
    assert outcome({"upgrade": {"last": None}}, 0.0) is None
    assert isinstance(UpgradeState, type)


def test_fleet_status_shows_the_last_upgrade() -> None:
    from fleet.control import format_status

    last = {"time": 40.0, "result": "refused", "message": "the installed fleet cannot start\nTraceback"}
    reply = {"pid": 1, "time": 100.0, "workers": [], "upgrade": {"last": last}}
    assert "last upgrade: refused, 1m00s ago: the installed fleet cannot start" in format_status(reply)
    assert "last upgrade" not in format_status({"pid": 1, "time": 100.0, "workers": [], "upgrade": {"last": None}})
