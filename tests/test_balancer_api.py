"""``Balancer``'s interface for the supervisor: ``set_draining`` and ``wait_idle``,
driven in-process against real backend servers on real sockets (small asyncio servers here,
so a test controls exactly when a request or a WebSocket ends)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Awaitable, Callable

from fleet.balancer import Balancer
from fleet.balancer.settings import ProxyViews
from fleet.config import Config


KILLED: dict[int, Callable[[], None]] = {}  # port -> "kill -9" of that backend


async def backend(name: str) -> tuple[asyncio.AbstractServer, int, list[asyncio.Event]]:
    """``GET /`` answers its name; ``GET /hold-<its name>`` answers when the test sets the next event;
    an Upgrade gets 101 and an echo until the client closes."""
    releases: list[asyncio.Event] = []
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"upgrade: websocket" in head.lower():
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    while data := await reader.read(65536):
                        writer.write(data)
                    break
                if head.startswith(b"GET /hold-" + name.encode() + b" "):
                    release = asyncio.Event()
                    releases.append(release)
                    await release.wait()
                body = name.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def kill() -> None:
        """What kill -9 does to a server's sockets: no more listening, every connection reset."""
        server.close()
        for writer in list(writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    KILLED[port] = kill
    return server, port, releases


async def get(port: int, path: str = "/", cookie: str | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Cookie: fleet_affinity={cookie}\r\n" if cookie else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


def run(test: Callable[[Balancer, list[tuple[int, list[asyncio.Event]]]], Awaitable[None]]) -> None:
    async def main() -> None:
        servers = [await backend(f"w{i}") for i in range(2)]
        balancer = Balancer(ProxyViews.of(Config(port=0, address="127.0.0.1", **({"queue_timeout": 2.0} if "queue_timeout" in Config.__dataclass_fields__ else {}))))
        await balancer.start()
        try:
            for index, (_, port, _) in enumerate(servers):
                balancer.add_upstream(f"w{index}", "127.0.0.1", port, ready=True)
            await asyncio.wait_for(test(balancer, [(p, r) for _, p, r in servers]), 20)
        finally:
            await balancer.close()
            for server, _, releases in servers:
                for release in releases:
                    release.set()
                server.close()

    asyncio.run(main())


def test_a_draining_worker_gets_no_new_client_but_serves_the_ones_pinned_to_it() -> None:
    async def test(balancer: Balancer, _: list[tuple[int, list[asyncio.Event]]]) -> None:
        assert balancer.port is not None
        balancer.set_draining("w0")
        assert {await get(balancer.port) for _ in range(8)} == {b"w1"}
        assert await get(balancer.port, cookie="w0") == b"w0"
        balancer.set_ready("w0", False)  # gone: its pinned clients move on
        assert await get(balancer.port, cookie="w0") == b"w1"

    run(test)


def test_in_a_bokeh_fleet_a_cookie_for_a_draining_worker_does_not_pin_a_request_naming_no_session() -> None:
    """A new Bokeh page makes a new session: on a draining worker it could be made, the worker
    stop while idle, and the page's WebSocket make it again elsewhere. A request naming a session
    made there still goes there."""
    async def test(balancer: Balancer, _: list[tuple[int, list[asyncio.Event]]]) -> None:
        assert balancer.port is not None
        balancer.serve_bokeh([])
        assert await get(balancer.port, cookie="w0") == b"w0"  # not draining: the cookie pins
        balancer.set_draining("w0")
        assert {await get(balancer.port, cookie="w0") for _ in range(6)} == {b"w1"}
        assert await get(balancer.port, "/app/ws?bokeh-session-id=w0-abc", cookie="w0") == b"w0"

    run(test)


def test_wait_idle_resolves_when_the_last_request_and_websocket_end() -> None:
    async def test(balancer: Balancer, servers: list[tuple[int, list[asyncio.Event]]]) -> None:
        port = balancer.port
        assert port is not None
        releases = servers[0][1]
        assert await balancer.wait_idle("w0", 0.1)  # nothing in flight
        held = asyncio.ensure_future(get(port, "/hold-w0", cookie="w0"))
        while not releases:
            await asyncio.sleep(0.01)
        assert not await balancer.wait_idle("w0", 0.2)  # a request is in flight: times out
        waiting = asyncio.ensure_future(balancer.wait_idle("w0", 5))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: t\r\nCookie: fleet_affinity=w0\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        releases[0].set()
        assert await held == b"w0"
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the WebSocket is still open
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        assert await asyncio.wait_for(waiting, 5) is True

    run(test)


def test_a_request_queued_while_no_worker_is_ready_goes_to_the_first_that_becomes_ready() -> None:
    async def test(balancer: Balancer, _: list[tuple[int, list[asyncio.Event]]]) -> None:
        port = balancer.port
        assert port is not None
        balancer.set_ready("w0", False)
        balancer.set_ready("w1", False)
        pending = asyncio.ensure_future(get(port))
        await asyncio.sleep(0.3)
        assert not pending.done() and balancer.stats.queued == 1
        balancer.set_ready("w1", True)
        assert await asyncio.wait_for(pending, 5) == b"w1"
        assert balancer.stats.queued == 0 and sum(balancer.stats.queue_wait_counts) == 1

    run(test)


def test_gets_in_flight_on_pooled_connections_of_a_killed_worker_go_to_the_other_one() -> None:
    """A worker killed with requests in flight on reused keep-alive connections: every one of
    them was unanswered and is a GET, so each is sent to the other worker; none fails. A failure
    on a reused connection counts as a try of that worker and empties its pool, so a retry never
    walks the dead worker's other pooled connections until the retry budget is gone."""
    async def test(balancer: Balancer, servers: list[tuple[int, list[asyncio.Event]]]) -> None:
        port = balancer.port
        assert port is not None
        (w0_port, w0_holds), _ = servers
        # Several pooled connections to w0, all reused by the requests that follow.
        for _ in range(3):
            assert await asyncio.gather(*(get(port, cookie="w0") for _ in range(16))) == [b"w0"] * 16
        held = [asyncio.ensure_future(get(port, "/hold-w0", cookie="w0")) for _ in range(4)]
        while len(w0_holds) < 4:
            await asyncio.sleep(0.01)
        KILLED[w0_port]()  # 4 requests in flight, 12 more pooled connections: all reset
        answers = await asyncio.wait_for(asyncio.gather(*held), 10)
        assert answers == [b"w1"] * 4
        assert balancer.stats.retries >= 4

    run(test)


# -- the retry path, end to end: a worker killed under keep-alive load ---------------------------

def test_killing_a_worker_under_keep_alive_load_fails_no_get(tmp_path: "Path") -> None:
    """Requests in flight on pooled connections to a worker killed with -9 are sent again to the
    other one (they are GETs, unanswered): no client sees an error."""
    import http.client
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    from support import wait_until
    from up_helpers import up

    backend_app = str(Path(__file__).parent / "apps" / "backend.py")
    fleet = up(tmp_path, backend_app, workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        wait_until(lambda: fleet.all_ready(2), 30, message="2 workers ready")
        stop = threading.Event()
        counts = {"ok": 0, "failed": 0}
        failures: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
            while not stop.is_set():
                try:
                    connection.request("GET", "/slow?seconds=0.05")
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                    detail = str(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    ok, detail = False, repr(exc)
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if not ok:
                        failures.append(detail)
            connection.close()

        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: counts["ok"] > 100, 20, message="load running")
            for _ in range(2):
                victim = fleet.worker("g1w0")["pid"]
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda: fleet.worker("g1w0")["pid"] not in (None, victim) and fleet.all_ready(2), 30,
                           message="w0 back")
                served = counts["ok"]
                wait_until(lambda: counts["ok"] > served + 100, 20, message="load goes on")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=20)
        assert counts["failed"] == 0, (counts, failures[:5])
        assert counts["ok"] > 300
