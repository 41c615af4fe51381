"""The three fronts of ``fleet up`` (``fleet.front``) and the master's one rollback: a front
either starts fully or leaves nothing behind, and so does a start that fails halfway.

Real implementations on free ports of 127.0.0.1: the built-in proxy (one process, and a group
of real proxy processes), the managed nginx's checks, the "none" front, and ``Master`` itself.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from pathlib import Path

import psutil
import pytest

from fleet.balancer.settings import ProxyViews
from fleet.config import Config
from fleet.front.builtin import BuiltinFront
from fleet.front.factory import front_for
from fleet.front.interface import Front, FrontError
from fleet.front.managed import ManagedFront
from fleet.front.noproxy import NoFront
from fleet.runner import Master
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.process import Output
from support import free_port, free_port_range, http_get, port_open, require_tool


def bindable(port: int) -> bool:
    """Nothing holds ``port`` (a listener, or a bound socket kept by a proxy group)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening_holder() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def info(worker_id: str, state: str, slot: str = "w0", port: int = 1) -> WorkerInfo:
    return WorkerInfo(index=0, id=worker_id, port=port, pid=None, state=state, started_at=None,
                      restarts=0, crash_looping=False, last_exit=None, slot=slot)


def builtin(**options: object) -> BuiltinFront:
    said: list[str] = []
    return BuiltinFront(ProxyViews.of(Config(address="127.0.0.1", **options)), said.append)  # type: ignore[arg-type]


def test_each_config_gets_its_front_and_every_front_is_a_front(tmp_path: Path) -> None:
    control = str(tmp_path / "fleet.sock")

    async def main() -> list[Front]:  # the built-in proxy is made inside its event loop
        return [front_for(Config(no_proxy=True), control, Output()),
                front_for(Config(port=0), control, Output()),
                front_for(Config(proxy="nginx", port=free_port()), control, Output())]

    fronts = asyncio.run(main())
    assert [type(front) for front in fronts] == [NoFront, BuiltinFront, ManagedFront]
    assert [front.routes for front in fronts] == [False, True, True]
    assert not (tmp_path / "fleet.dataplane").exists()  # choosing starts nothing


def test_every_front_has_every_member_of_the_interface() -> None:
    members = {name for name in vars(Front) if not name.startswith("_")}
    assert {"start", "serve", "worker_changed", "wait_idle", "drain", "close", "routes"} <= members
    for kind in (BuiltinFront, ManagedFront, NoFront):
        assert not [name for name in members if not hasattr(kind, name)], kind


def test_the_none_front_starts_serves_and_stops_without_a_trace() -> None:
    async def main() -> None:
        front = NoFront()
        await front.start()
        await front.serve()
        front.worker_changed(info("g1w0", "ready"))
        assert front.slot_of("g1w0") == "g1w0"  # no proxy: metrics keep the worker id
        assert await front.wait_idle("g1w0", 0.0)
        assert front.status() == {"kind": "none"} and front.proxies() is None
        assert front.port is None and front.stats is None and front.check_scale(9) is None
        await front.stop_accepting()
        await front.drain(0.0)
        await front.close()
        await front.close()

    asyncio.run(main())


def test_the_built_in_front_binds_at_start_and_close_frees_the_port() -> None:
    async def main() -> None:
        front = builtin(port=0)
        await front.start()
        port = front.port
        assert port is not None and port_open(port) and not bindable(port)
        assert front.status() == {"kind": "builtin"} and front.proxies() is None
        await front.close()
        await front.close()  # closing twice is allowed: the master's rollback may
        assert bindable(port)

    asyncio.run(main())


def test_a_taken_proxy_port_fails_the_start_naming_it() -> None:
    async def main() -> None:
        with listening_holder() as holder:
            taken = holder.getsockname()[1]
            front = builtin(port=taken)
            with pytest.raises(FrontError, match=f"proxy port 127.0.0.1:{taken} is already in use"):
                await front.start()
            await front.close()

    asyncio.run(main())


@pytest.mark.parametrize("processes", [1, 2])
def test_a_start_that_fails_after_binding_the_proxy_port_frees_it(processes: int) -> None:
    """The proxy port is bound, then the redirect port is found taken: nothing stays bound."""
    async def main() -> None:
        port = free_port()
        with listening_holder() as holder:
            taken = holder.getsockname()[1]
            front = builtin(port=port, https_redirect_port=taken, proxy_processes=processes)
            with pytest.raises(FrontError, match=f"{taken} is already in use"):
                await front.start()
        assert bindable(port)

    asyncio.run(main())


def test_a_proxy_group_that_cannot_open_its_unix_socket_frees_the_port(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        front = builtin(port=port, proxy_processes=2, unix_socket=str(tmp_path / "missing" / "fleet.sock"))
        with pytest.raises(FrontError, match=f"cannot listen on 127.0.0.1:{port}"):
            await front.start()
        assert bindable(port)

    asyncio.run(main())


def test_a_proxy_group_ends_every_proxy_process_it_started_when_closed() -> None:
    async def main() -> None:
        front = builtin(port=0, proxy_processes=2)
        await front.start()
        try:
            port = front.port
            assert port is not None and port_open(port)
            processes = front.proxies()
            assert processes is not None and len(processes) == 2
            pids = [row["pid"] for row in processes]
            assert all(psutil.pid_exists(pid) for pid in pids)
        finally:
            await front.close()
        assert bindable(port)
        assert not [pid for pid in pids if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]

    asyncio.run(main())


def test_the_built_in_front_follows_a_worker_until_it_is_removed() -> None:
    async def main() -> None:
        front = builtin(port=0)
        await front.start()
        try:
            proxy = front.proxy
            front.worker_changed(info("g1w0", "starting", slot="w0"))
            upstream = proxy.upstreams.get("g1w0")
            assert upstream is not None and not upstream.ready and front.slot_of("g1w0") == "w0"
            front.worker_changed(info("g1w0", "ready", slot="w0"))
            assert upstream.ready
            front.worker_changed(info("g1w0", "draining", slot="w0"))
            assert upstream.draining
            front.worker_changed(info("g1w0", "stopped", slot="w0"))
            assert proxy.upstreams.get("g1w0") is None and "g1w0" not in front.stats.upstreams
            assert front.slot_of("g1w0") == "g1w0"
            # While fleet stops, a stopped worker stays routed-to until the proxy closes.
            front.worker_changed(info("g1w1", "ready", slot="w1"))
            await front.stop_accepting()
            front.worker_changed(info("g1w1", "stopped", slot="w1"))
            assert proxy.upstreams.get("g1w1") is not None and front.slot_of("g1w1") == "w1"
        finally:
            await front.close()

    asyncio.run(main())


def test_the_managed_front_refuses_port_0_before_it_writes_anything(tmp_path: Path) -> None:
    async def main() -> None:
        front = ManagedFront(Config(proxy="nginx", port=0), str(tmp_path / "fleet.sock"), Output())
        with pytest.raises(FrontError, match="needs a fixed --port"):
            await front.start()
        await front.close()

    asyncio.run(main())
    assert not (tmp_path / "fleet.dataplane").exists()


def test_the_managed_front_names_a_taken_port_and_leaves_no_files(tmp_path: Path) -> None:
    require_tool("nginx")

    async def main() -> None:
        with listening_holder() as holder:
            taken = holder.getsockname()[1]
            front = ManagedFront(Config(proxy="nginx", port=taken, address="127.0.0.1"),
                                 str(tmp_path / "fleet.sock"), Output())
            with pytest.raises(FrontError, match=f"127.0.0.1:{taken} is already in use"):
                await front.start()
            await front.close()

    asyncio.run(main())
    assert not (tmp_path / "fleet.dataplane").exists()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_master_whose_start_fails_after_the_proxy_started_leaves_nothing_behind(
        tmp_path: Path, processes: int) -> None:
    """The proxy (and its processes) started, then ``--metrics-port`` is taken: ``fleet up``
    says so, exits 1, and the proxy port, its processes and the control socket are gone."""
    port, base = free_port(), free_port_range(1)
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with listening_holder() as holder:
        taken = holder.getsockname()[1]
        config = Config(cmd=f"{sys.executable} -m http.server {{port}}", address="127.0.0.1", port=port,
                        base_port=base, surge_base_port=free_port_range(1), metrics_port=taken,
                        proxy_processes=processes, control_socket=str(tmp_path / "fleet.sock"))
        stream = io.StringIO()
        assert asyncio.run(Master(config, Output(stream)).run()) == 1
    lines = stream.getvalue().splitlines()
    assert any(f"{taken}" in line and "in use" in line for line in lines), lines
    assert not any("workers of" in line or line.startswith("fleet | ready") for line in lines), lines  # no worker ran
    assert bindable(port)
    assert not (tmp_path / "fleet.sock").exists()
    left = {child.pid for child in psutil.Process().children(recursive=True)
            if child.status() != psutil.STATUS_ZOMBIE} - before
    assert not left, [psutil.Process(pid).cmdline() for pid in left]


class Alone:
    """A ``Crew`` without a supervisor: the managed server is owned by nobody else."""

    family = (None, None)

    def helper_spawning(self) -> None:
        return None

    def own_helper(self, pid: int) -> None:
        pass


def test_a_managed_server_that_cannot_bind_at_serve_leaves_no_process_and_no_files(tmp_path: Path) -> None:
    """``start`` found the port free; it is taken before ``serve``: nginx cannot listen, the
    front says so and removes everything it made."""
    require_tool("nginx")
    from up_helpers import processes_mentioning

    async def main() -> None:
        port = free_port()
        front = ManagedFront(Config(proxy="nginx", port=port, address="127.0.0.1"),
                             str(tmp_path / "fleet.sock"), Output(io.StringIO()))
        await front.start()
        assert (tmp_path / "fleet.dataplane").is_dir()
        front.attach(Alone())
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))  # bound, not listening: nothing answers the probe
            with pytest.raises(FrontError, match="nginx exited at start"):
                await front.serve()
        await front.close()

    asyncio.run(main())
    assert not (tmp_path / "fleet.dataplane").exists()
    assert not processes_mentioning(str(tmp_path))


def test_a_managed_server_serves_fleet_routes_and_close_ends_it(tmp_path: Path) -> None:
    require_tool("nginx")
    from up_helpers import processes_mentioning

    async def main() -> None:
        port = free_port()
        front = ManagedFront(Config(proxy="nginx", port=port, address="127.0.0.1"),
                             str(tmp_path / "fleet.sock"), Output(io.StringIO()))
        await front.start()
        front.attach(Alone())
        front.add_local_route("/_fleet/probe", lambda: (200, "text/plain", b"front\n"))
        try:
            await front.serve()
            assert front.status()["pid"] is not None and processes_mentioning(str(tmp_path))
            status, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/_fleet/probe")
            assert (status, body) == (200, b"front\n")
        finally:
            await front.close()
        assert not port_open(port)

    asyncio.run(main())
    assert not (tmp_path / "fleet.dataplane").exists()
    assert not processes_mentioning(str(tmp_path))
