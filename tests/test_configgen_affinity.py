"""The affinity cookie of ``fleet config nginx|apache|haproxy``, run by the real servers.

One ``fleet up --no-proxy examples/tornado_hello.py -n 3`` behind each generated configuration:
the first answer sets ``fleet_affinity`` to the answering worker's slot (``w<i>``, its port);
requests and a WebSocket upgrade with that cookie stay on it even while it is the busiest; a
cookie that names no worker here is replaced; and after a ``fleet reload`` (workers restarted in
place as the next generation) the same cookie still reaches the same port. The servers are
started and stopped by ``test_configgen_servers.running``.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import websocket

from support import free_port, wait_until
from test_configgen_servers import SERVERS, TORNADO_APP, fleet_config, get, running, worker_of
from up_helpers import Fleet, workers_without_proxy

pytestmark = pytest.mark.timeout(180)

# fleet's worker id in tornado_hello's answer: g<generation>w<index>
_WORKER = re.compile(r"g(\d+)w(\d+)")


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("fleet"), TORNADO_APP, workers=3) as fleet:
        yield fleet


def slot_of(worker: str) -> str:
    """``w1`` for fleet's worker ``g3w1``: the port it holds."""
    match = _WORKER.fullmatch(worker)
    assert match, worker
    return f"w{match.group(2)}"


def set_cookie(headers: dict[str, str]) -> str:
    return next((value for name, value in headers.items() if name.lower() == "set-cookie"), "")


def affinity_cookie(headers: dict[str, str]) -> str | None:
    """The value of the ``fleet_affinity`` cookie a response sets (Apache's starts with a dot)."""
    value = set_cookie(headers)
    return value.split(";", 1)[0].split("=", 1)[1] if value.startswith("fleet_affinity=") else None


def with_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"other=1; fleet_affinity={value}"}


def pinned_answers(port: int, cookie: str, count: int) -> list[tuple[str, str | None]]:
    """(worker, cookie set) of ``count`` requests carrying ``cookie``."""
    answers = []
    for _ in range(count):
        status, headers, body = get(port, headers=with_cookie(cookie))
        assert status == 200, body
        answers.append((worker_of(body), affinity_cookie(headers)))
    return answers


@pytest.mark.parametrize("kind", SERVERS)
def test_cookie_pins_requests_and_websocket_to_one_worker_across_a_reload(
        kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()
    with running(kind, tmp_path, fleet_config(workers, port)):
        status, headers, body = get(port)
        assert status == 200, body
        first = worker_of(body)
        cookie = affinity_cookie(headers)
        assert cookie is not None, headers
        # the slot of the worker that answered (Apache puts its route after a dot)
        assert cookie == (f".{slot_of(first)}" if kind == "apache" else slot_of(first))
        attributes = set_cookie(headers).lower()
        assert "path=/" in attributes and "httponly" in attributes and "samesite=lax" in attributes

        # Pinned even while that worker is the busiest: least connections would avoid it.
        slow: dict[str, Any] = {}
        holder = threading.Thread(
            target=lambda: slow.update(reply=get(port, "/slow?seconds=2", timeout=15, headers=with_cookie(cookie))))
        holder.start()
        try:
            answers = pinned_answers(port, cookie, 6)
        finally:
            holder.join(timeout=15)
        assert slow["reply"][0] == 200 and worker_of(slow["reply"][2]) == first
        assert answers == [(first, None)] * 6  # the same worker, and no new cookie

        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5,
                                         cookie=f"fleet_affinity={cookie}")
        try:
            ws.send("pinned?")
            assert ws.recv() == f"{first}: pinned?"
        finally:
            ws.close()

        # A cookie naming no worker here (another fleet's, a stale one) is balanced and replaced.
        for stale in ("w9", "g1w0x", ".w9"):
            status, headers, body = get(port, headers=with_cookie(stale))
            assert status == 200
            replaced = affinity_cookie(headers)
            assert replaced == (f".{slot_of(worker_of(body))}" if kind == "apache" else slot_of(worker_of(body)))

        # fleet reload (--no-proxy) restarts each worker in place as the next generation: the
        # worker id changes, the slot and its port do not, so the cookie still pins.
        result = workers.cli("reload")
        assert result.returncode == 0, result.stderr
        generation = int(_WORKER.fullmatch(first).group(1))  # type: ignore[union-attr]

        def reloaded_worker_answers() -> bool:
            # The proxy may have taken the port out for a moment while its worker restarted.
            worker = worker_of(get(port, headers=with_cookie(cookie))[2])
            return slot_of(worker) == slot_of(first) and \
                int(_WORKER.fullmatch(worker).group(1)) > generation  # type: ignore[union-attr]

        wait_until(reloaded_worker_answers, 20, interval=0.1, message=f"{kind} reaching the reloaded worker")
        after = pinned_answers(port, cookie, 4)
        assert {slot_of(worker) for worker, _ in after} == {slot_of(first)}, after
        assert all(set_cookie is None for _, set_cookie in after), after
