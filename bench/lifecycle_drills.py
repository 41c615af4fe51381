"""Drills for the worker lifecycle guarantees with figures for the README.

    python bench/lifecycle_drills.py              # both drills, 10 rounds each
    python bench/lifecycle_drills.py hang --rounds 20
    python bench/lifecycle_drills.py escape

  hang    ``fleet up tests/apps/stuck.py -n 2 --worker-timeout 3``; each round blocks w0's event
          loop (``time.sleep(3600)`` in a handler) and measures the time until fleet says it
          kills it and until a new w0 is ready; then 8 s of load (4 clients, 50 ms of CPU per
          request) with the loop lag gauge sampled, which must kill nothing
  escape  a ``setsid sleep`` below a live worker (``--cmd 'setsid sleep N & exec python -m
          http.server {port}'``) and an orphan re-parented to fleet (``tests/apps/stuck.py``
          ``/orphan``), each ended by ``fleet down`` and by ``kill -9`` of the master: how many
          survive, and how long the last one took to go

Prints the figures. A report, not a test (``tests/test_hung_workers.py`` and
``tests/test_descendants.py`` assert the same things once).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import test_descendants as descendants  # noqa: E402
import test_hung_workers as hung  # noqa: E402
from support import alive, http_get, wait_until  # noqa: E402
from up_helpers import up  # noqa: E402


def spread(values: list[float]) -> str:
    return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s ({len(values)} rounds)")


def hang(args: argparse.Namespace) -> dict[str, Any]:
    killed: list[float] = []
    ready: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fleet-drill-") as tmp:
        fleet = up(Path(tmp), hung.STUCK_APP, "--worker-timeout", "3", workers=2, proxy=True)
        with fleet.proc:
            fleet.proc.wait_for_output(r"ready: open", timeout=60)
            for _ in range(args.rounds):
                # Up longer than the restart policy's stable_after (5 s): each kill is then a
                # first death, restarted after 0.1 s, not a crash loop with growing backoff.
                time.sleep(5.5)
                offset = len(fleet.proc.output())

                def seen(pattern: str) -> bool:
                    return re.search(pattern, fleet.proc.output()[offset:]) is not None

                hung.block_in_background(f"http://127.0.0.1:{fleet.base_port}/block?seconds=3600")
                # Fleet's output only (no status polls: they load the master's loop).
                wait_until(lambda: seen("blocking the event loop"), 10, interval=0.005)
                started = time.monotonic()
                wait_until(lambda: seen("killing it"), 30, interval=0.005)
                killed.append(time.monotonic() - started)
                wait_until(lambda: seen(rf"w0:{fleet.base_port} ready \(pid"), 30, interval=0.005)
                ready.append(time.monotonic() - started)
            restarts = fleet.worker("w0")["restarts"]
            lags, answered, kills_under_load = load(fleet, seconds=8)
    return {
        "loop blocked -> 'killing it' line": spread(killed),
        "loop blocked -> new w0 ready": spread(ready),
        "w0 restarts": restarts,
        "under load (4 clients, 50 ms CPU each)": f"{answered} requests, {kills_under_load} killed, "
                                                  f"loop lag gauge max {max(lags):.3f} s",
    }


def load(fleet: Any, seconds: float) -> tuple[list[float], int, int]:
    stop = time.monotonic() + seconds
    answered = [0] * 4
    kills = fleet.proc.output().count("killing it")

    def client(slot: int) -> None:
        while time.monotonic() < stop:
            if http_get(f"http://127.0.0.1:{fleet.port}/busy?ms=50", timeout=10)[0] == 200:
                answered[slot] += 1

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    lags = []
    while time.monotonic() < stop:
        lags.append(hung.metric(fleet.port, "fleet_worker_event_loop_lag_seconds", "w0") or 0.0)
        time.sleep(0.25)
    for thread in threads:
        thread.join(timeout=20)
    return lags, sum(answered), fleet.proc.output().count("killing it") - kills


def escape(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in ("setsid-child", "orphan"):
        for how in ("fleet down", "kill -9"):
            survivors = 0
            gone: list[float] = []
            for _ in range(args.rounds):
                mark = descendants.marker()
                with tempfile.TemporaryDirectory(prefix="fleet-drill-") as tmp:
                    fleet = descendants.start_with_escaped_child(Path(tmp), kind, mark)
                    with fleet.proc:
                        pids = [process.pid for process in descendants.sleepers(mark)]
                        started = time.monotonic()
                        if how == "kill -9":
                            os.kill(fleet.proc.pid, signal.SIGKILL)
                        else:
                            fleet.cli("down")
                        try:
                            wait_until(lambda: not any(alive(pid) for pid in pids), 10, interval=0.005)
                            gone.append(time.monotonic() - started)
                        except AssertionError:
                            survivors += 1
                            for process in descendants.sleepers(mark):
                                process.kill()
            results[f"{kind}, {how}"] = f"{survivors} survived; gone after {spread(gone)}" if gone else \
                f"{survivors} survived"
    return results


DRILLS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {"hang": hang, "escape": escape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drills", nargs="*", choices=[[], *DRILLS], default=[], metavar="DRILL")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for name in args.drills or list(DRILLS):
        print(f"== {name}")
        for key, value in DRILLS[name](args).items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
