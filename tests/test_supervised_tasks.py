"""Long-lived tasks that never die silently (``tasks.supervise`` and its pure backoff), the
descriptor budget's arithmetic, and an accept loop that comes back by itself after EMFILE."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap

import pytest

from fleet.balancer.fdbudget import PER_CONNECTION, Budget
from fleet.tasks import RestartBackoff, supervise


def test_backoff_doubles_up_to_the_most_and_a_stable_run_starts_again() -> None:
    policy = RestartBackoff(first=0.5, most=30.0, stable=60.0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.delay(10_000) == 30.0
    assert policy.failures_after(5, ran_for=1.0) == 6
    assert policy.failures_after(5, ran_for=60.0) == 1  # it had been healthy for a while


def test_supervise_restarts_with_backoff_and_logs_each_failure_once() -> None:
    now = [0.0]
    slept: list[float] = []
    lines: list[str] = []
    runs = [0]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def flaky() -> None:
        runs[0] += 1
        now[0] += 1.0
        if runs[0] <= 3:
            raise OSError(24, "Too many open files")

    asyncio.run(supervise("the sampler", flaky, lines.append, clock=lambda: now[0], sleep=fake_sleep))
    assert runs[0] == 4 and slept == [0.5, 1.0, 2.0]
    assert len(lines) == 3 and all("the sampler failed (OSError: [Errno 24] Too many open files" in line
                                   for line in lines)
    assert "restarting it in 0.5 s (failure 1 in a row)" in lines[0]


def test_supervise_is_cancelled_at_once() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(supervise("forever", forever, print))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_budget_keeps_a_worker_socket_per_client_and_the_reserve() -> None:
    budget = Budget(limit=256, base=24, reserve=32)
    assert budget.cap == (256 - 24 - 32) // PER_CONNECTION
    assert not budget.must_shed(fileno=100, connections=0)
    assert budget.must_shed(fileno=256 - 32 - 1, connections=0)  # fewer than the reserve left
    assert budget.must_shed(fileno=100, connections=budget.cap)
    assert budget.must_shed(fileno=100, connections=budget.cap - 10, pooled=40)  # pooled count too
    assert Budget(1 << 20, 24).must_shed(fileno=1000, connections=5000) is False
    assert budget.measured(0, 10, 10) is budget  # unknown: keep
    assert budget.measured(200, 50, 50).base == 100
    assert budget.measured(60, 50, 50).base == 24  # never below the base at start


SERVER = textwrap.dedent("""
    import asyncio, os, resource, socket, sys
    from fleet.acceptor import Acceptor

    async def main():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        def answer(sock):
            sock.setblocking(True)
            sock.sendall(b"ok\\n")
            sock.close()
        acceptor = Acceptor(listener, answer)
        acceptor.start()
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print(listener.getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        while acceptor.failures == 0:
            await asyncio.sleep(0.05)
        print("emfile", flush=True)
        freed = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), freed.set)
        await freed.wait()
        for fd in held:
            os.close(fd)
        await asyncio.sleep(30)

    asyncio.run(main())
""")


@pytest.mark.timeout(60)
def test_accepting_resumes_on_its_own_once_descriptors_are_free() -> None:
    """No connection ends to wake the listener: its timer does (the control socket's case)."""
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert server.stdout.readline().strip() == "emfile"  # the accept failed: out of descriptors
            server.stdin.write("free\n")
            server.stdin.flush()
            assert client.recv(16) == b"ok\n"  # accepted by the retry timer, within its timeout
    finally:
        server.kill()
        server.wait(timeout=10)
