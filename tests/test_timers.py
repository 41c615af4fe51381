"""Timers driven by the test, not waited for: the built-in routes' render cache on a clock the
test moves, and the proxy's timeout sweep (``Balancer.sweep(now)``) called with the time the
test wants to have passed. Real ``Balancer`` on real sockets; only the clock is the test's."""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

import pytest

from fleet.balancer import Balancer
from fleet.balancer.context import RENDER_TTL, CachedRoute, render_ttl
from fleet.balancer.settings import ProxyViews
from fleet.config import Config


class Renders:
    """A route handler that counts its renders and says which one this is."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> tuple[int, str, bytes]:
        self.count += 1
        return 200, "text/plain", b"render %d\n" % self.count


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the cache, alone --------------------------------------------------------------------------

def test_a_cached_route_renders_again_only_once_its_ttl_has_passed_on_its_clock() -> None:
    clock, handler = ManualClock(), Renders()
    route = CachedRoute(handler, clock, ttl=1.0, headers=[("X-A", "b")])
    assert route()[2] == b"render 1\n"
    clock.now += 0.999
    assert route()[2] == b"render 1\n" and handler.count == 1
    clock.now += 0.001
    assert route()[2] == b"render 2\n"
    assert route.headers == b"X-A: b\r\n"
    zero = CachedRoute(Renders(), clock, ttl=0.0)
    assert [zero()[2] for _ in range(3)] == [b"render 1\n", b"render 2\n", b"render 3\n"]


def test_render_ttl_comes_from_the_environment_within_bounds() -> None:
    assert render_ttl({}) == RENDER_TTL == 1.0
    assert render_ttl({"FLEET_METRICS_TTL": " "}) == RENDER_TTL
    assert render_ttl({"FLEET_METRICS_TTL": "0"}) == 0.0
    assert render_ttl({"FLEET_METRICS_TTL": "0.25"}) == 0.25
    for bad in ("soon", "-1", "nan", "inf", "61", str(math.pi * 100)):
        with pytest.raises(ValueError, match=r"FLEET_METRICS_TTL must be a number of seconds from 0 to 60"):
            render_ttl({"FLEET_METRICS_TTL": bad})


# -- a real Balancer ---------------------------------------------------------------------------

async def backend() -> tuple[asyncio.AbstractServer, int]:
    """Answers every request head ``ok``, keep-alive."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(test: Callable[[Balancer], Awaitable[None]], clock: Callable[[], float] | None = None,
        **settings: float) -> None:
    async def main() -> None:
        server, port = await backend()
        balancer = Balancer(ProxyViews.of(Config(port=0, address="127.0.0.1", **settings)), clock=clock)
        await balancer.start()
        try:
            balancer.add_upstream("w0", "127.0.0.1", port, ready=True)
            await asyncio.wait_for(test(balancer), 20)
        finally:
            await balancer.close()
            server.close()

    asyncio.run(main())


async def ask(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send one request head on a new connection; (reader, writer, the whole response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    response = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in response.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    return reader, writer, response + await reader.readexactly(length)


async def ask_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    writer.write(head)
    response = await reader.readuntil(b"\r\n\r\nok")
    return reader, writer, response


async def closed_by_proxy(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True


def test_a_balancer_route_is_rendered_again_when_its_clock_says_the_ttl_passed() -> None:
    clock = ManualClock()

    async def test(balancer: Balancer) -> None:
        handler = Renders()
        balancer.add_local_route("/metrics", handler)
        head = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
        assert balancer.port is not None
        reader, writer, first = await ask(balancer.port, head)
        writer.write(head)
        again = await reader.readuntil(b"render 1\n")
        assert first.endswith(b"render 1\n") and again.endswith(b"render 1\n") and handler.count == 1
        clock.now += 1.0
        writer.write(head)
        assert (await reader.readuntil(b"render 2\n")).endswith(b"render 2\n")
        writer.close()

    run(test, clock=clock)


def test_the_sweep_closes_a_client_without_a_whole_head_once_header_timeout_has_passed() -> None:
    async def test(balancer: Balancer) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        await writer.drain()
        while not balancer.context.clients:  # accepted by the proxy
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the partial head read: its exchange has its start time
        started = loop.time()
        balancer.sweep(started + 29)  # within --header-timeout 30: left alone
        await asyncio.sleep(0.05)
        assert not reader.at_eof() and "header_timeout" not in balancer.stats.client_errors
        balancer.sweep(started + 31)
        assert await closed_by_proxy(reader)
        assert balancer.stats.client_errors.get("header_timeout") == 1
        writer.close()

    run(test, header_timeout=30.0)


def test_the_sweep_closes_an_idle_keep_alive_client_once_client_timeout_has_passed() -> None:
    async def test(balancer: Balancer) -> None:
        loop = asyncio.get_running_loop()
        assert balancer.port is not None
        reader, writer, response = await ask(balancer.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok")
        idle_since = loop.time()
        balancer.sweep(idle_since + 74)  # within --client-timeout 75
        _, _, again = await ask_on(reader, writer, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert again.endswith(b"ok")  # still open, and served
        balancer.sweep(loop.time() + 76)
        assert await closed_by_proxy(reader)
        writer.close()

    run(test, client_timeout=75.0)



def test_the_managed_proxys_internal_routes_render_once_per_ttl_on_the_given_clock() -> None:
    """Behind nginx/HAProxy, ``/metrics`` is rendered by ``InternalRoutes``: a render is reused
    until the clock has moved by the TTL, and no real time passes in this test."""
    from fleet.dataplane.internal import InternalRoutes

    now = [100.0]
    renders: list[int] = []

    def handler() -> tuple[int, str, bytes]:
        renders.append(1)
        return 200, "text/plain", str(len(renders)).encode()

    routes = InternalRoutes(clock=lambda: now[0], ttl=1.0)
    routes.add("/metrics", handler)
    assert routes.answer("/metrics")[2] == b"1"
    now[0] += 0.99
    assert routes.answer("/metrics")[2] == b"1"
    now[0] += 0.01
    assert routes.answer("/metrics")[2] == b"2"
    assert routes.answer("/nothing")[0] == 404
    fresh = InternalRoutes(clock=lambda: now[0], ttl=0.0)
    fresh.add("/metrics", handler)
    assert fresh.answer("/metrics")[2] == b"3" and fresh.answer("/metrics")[2] == b"4"
