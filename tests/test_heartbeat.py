"""``--worker-timeout``: the pure hang decisions, the beat file both sides share, and the
master's check acting on a real file (no worker process: the end-to-end tests start those)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.supervisor.heartbeat import HeartbeatFile, Liveness, beat_interval, is_hung, loop_lag
from fleet.worker.heartbeat import ENV_FD, ENV_INTERVAL, Heartbeat, write_beat


def test_is_hung_only_past_the_timeout_and_never_when_off() -> None:
    assert not is_hung(100.0, 160.0, 60.0)
    assert is_hung(100.0, 160.01, 60.0)
    assert not is_hung(100.0, 10_000.0, 0.0)


@given(st.floats(0, 1e6), st.floats(0, 0.99), st.floats(1.01, 100), st.floats(1, 1e4))
def test_hung_exactly_when_the_last_beat_is_older_than_the_timeout(
        last: float, young: float, old: float, timeout: float) -> None:
    assert not is_hung(last, last + young * timeout, timeout)
    assert is_hung(last, last + old * timeout, timeout)
    assert not is_hung(last, last + old * timeout, 0.0)


def test_loop_lag_grows_while_the_next_beat_is_late() -> None:
    assert loop_lag(10.0, 0.02, 10.5, 1.0) == 0.02  # next beat not due yet: what the last one measured
    assert loop_lag(10.0, 0.02, 14.0, 1.0) == pytest.approx(3.0)  # 3 s past the due beat


def test_beat_interval_is_four_per_timeout_at_most_one_a_second() -> None:
    assert beat_interval(60) == 1.0
    assert beat_interval(2) == 0.5


def test_beat_file_carries_time_and_lag_in_one_write() -> None:
    beat = HeartbeatFile()
    try:
        assert beat.read() is None  # no beat yet
        write_beat(beat.fd, 12345.678, 0.25)
        when, lag = beat.read()  # type: ignore[misc]
        assert when == pytest.approx(12345.678, abs=1e-6) and lag == pytest.approx(0.25, abs=1e-6)
    finally:
        beat.close()


def test_worker_takes_the_heartbeat_out_of_its_environment() -> None:
    beat = HeartbeatFile()
    fd = os.dup(beat.fd)
    os.set_inheritable(fd, True)
    try:
        environ = {ENV_FD: str(fd), ENV_INTERVAL: "0.5", "OTHER": "x"}
        heartbeat = Heartbeat.from_environ(environ)
        assert heartbeat is not None and heartbeat.fd == fd and heartbeat.interval == 0.5
        assert environ == {"OTHER": "x"}  # the app's subprocesses never see it
        assert not os.get_inheritable(fd)
        assert Heartbeat.from_environ({}) is None
    finally:
        os.close(fd)
        beat.close()


def test_bad_heartbeat_descriptor_is_reported_not_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    assert Heartbeat.from_environ({ENV_FD: "not-a-number"}) is None
    assert "bad FLEET_HEARTBEAT_FD='not-a-number'" in capsys.readouterr().err


def test_beats_come_from_the_loop_and_measure_how_late_it_ran() -> None:
    beat = HeartbeatFile()

    async def scenario() -> tuple[float, float]:
        heartbeat = Heartbeat(beat.fd, 0.05)
        heartbeat.start()
        await asyncio.sleep(0.2)
        first = beat.read()
        assert first is not None and time.monotonic() - first[0] < 0.15
        time.sleep(0.4)  # the loop is blocked: no beat can be written meanwhile
        blocked = beat.read()
        assert blocked is not None and time.monotonic() - blocked[0] >= 0.35  # the last beat is old
        await asyncio.sleep(0.01)  # the late timer runs now and reports its lateness
        heartbeat.stop()
        after = beat.read()
        assert after is not None
        return after

    try:
        when, lag = asyncio.run(scenario())
        assert lag == pytest.approx(0.35, abs=0.1)
    finally:
        beat.close()


def test_liveness_kills_a_worker_whose_beats_stopped_once_and_names_it() -> None:
    said: list[str] = []
    kills: list[str] = []

    async def scenario() -> None:
        liveness = Liveness(3.0, None, "127.0.0.1", said.append)
        extras = liveness.prepare("w1", beats=True)
        fd = int(extras.env[ENV_FD])
        assert extras.pass_fds == (fd,) and extras.env[ENV_INTERVAL] == "0.75"
        liveness.watch("w1", "w1:5101", 5101, lambda: kills.append("w1"))
        now = time.monotonic()
        write_beat(fd, now, 0.01)
        liveness.check(now + 2.9)
        assert kills == [] and liveness.lags()["w1"] < 0.1
        liveness.check(now + 3.5)
        liveness.check(now + 4.5)  # killed once, not at every check
        assert kills == ["w1"]
        assert said == ["w1:5101 event loop blocked for 3.5 s (--worker-timeout 3): killing it"]
        await liveness.close()
        assert liveness.lags() == {}

    asyncio.run(scenario())


def test_liveness_without_a_heartbeat_or_health_path_watches_nothing() -> None:
    async def scenario() -> None:
        liveness = Liveness(3.0, None, "127.0.0.1", lambda message: None)
        assert liveness.prepare("w0", beats=False).env == {}  # a --cmd worker
        liveness.watch("w0", "w0:5100", 5100, lambda: pytest.fail("killed without a way to know"))
        liveness.check(time.monotonic() + 100)
        off = Liveness(0.0, "/health", "127.0.0.1", lambda message: None)
        assert off.prepare("w0", beats=True).env == {}  # --worker-timeout 0
        await liveness.close()
        await off.close()

    asyncio.run(scenario())


def test_a_renewed_timeout_is_for_workers_spawned_after_it() -> None:
    """A live reload of --worker-timeout: the new generation beats and is judged by the new
    value; a worker spawned before keeps the interval it was given and the timeout it had."""
    said: list[str] = []
    kills: list[str] = []

    async def scenario() -> None:
        liveness = Liveness(3.0, None, "127.0.0.1", said.append)
        old = int(liveness.prepare("g1w0", beats=True).env[ENV_FD])
        liveness.renew(20.0, None)
        extras = liveness.prepare("g2w0", beats=True)
        assert extras.env[ENV_INTERVAL] == "1"
        liveness.watch("g1w0", "g1w0:5100", 5100, lambda: kills.append("g1w0"))
        liveness.watch("g2w0", "g2w0:5200", 5200, lambda: kills.append("g2w0"))
        now = time.monotonic()
        write_beat(old, now, 0.0)
        write_beat(int(extras.env[ENV_FD]), now, 0.0)
        liveness.check(now + 5)
        assert kills == ["g1w0"] and said == ["g1w0:5100 event loop blocked for 5.0 s (--worker-timeout 3): killing it"]
        liveness.check(now + 21)
        assert kills == ["g1w0", "g2w0"]
        liveness.renew(0.0, None)  # switched off: the next worker gets no heartbeat
        assert liveness.prepare("g3w0", beats=True).env == {}
        await liveness.close()

    asyncio.run(scenario())
