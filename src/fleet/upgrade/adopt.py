"""The new master's side of ``fleet upgrade``: read the state the old one left (``state``) and
take over its listeners, workers (``supervisor.adoption``), WebSocket tunnels, idle keep-alive
clients and counters.

A tunnel's two sockets are first given a holding protocol that reads nothing; once both sides
exist they are switched to the proxy's own ``ClientConnection`` and ``UpstreamConnection`` in
tunnel mode, so an adopted WebSocket is relayed, timed out, counted and drained exactly as one
opened here (a reload waits for it; the least-connections count includes it).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any

from fleet.balancer.exchange import TUNNEL, Exchange
from fleet.balancer.protocol import ClientConnection
from fleet.balancer.upstream import UpstreamConnection
from fleet.upgrade.handover import STATE_ENV
from fleet.upgrade.state import MAX_STATE_BYTES, StateError, TunnelRecord, UpgradeState, load

if TYPE_CHECKING:
    from fleet.balancer.server import Balancer


Master = Any  # runner.Master (the runner imports this module)


def take_state(environ: dict[str, str] | Any = os.environ) -> UpgradeState | None:
    """The state handed over through ``FLEET_UPGRADE_STATE`` (removed from the environment, so
    no child inherits it), or None for an ordinary start. ``StateError`` if it cannot be read."""
    value = environ.pop(STATE_ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
    except ValueError:
        raise StateError(f"{STATE_ENV}={value!r} is not a descriptor") from None
    try:
        chunks, size = [], 0
        while size <= MAX_STATE_BYTES:
            chunk = os.pread(fd, 1 << 20, size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise StateError(f"cannot read the upgrade state: {exc.strerror}") from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    state = load(b"".join(chunks))
    for kept in state.fds():
        os.set_inheritable(kept, False)  # ours now; a worker spawned later must not get them
    return state


def prepare_front(balancer: "Balancer", state: UpgradeState, unix_path: str | None) -> None:
    """Before the front starts: it serves the old master's listeners instead of binding."""
    listeners = [socket.socket(fileno=fd) for fd in state.listener_fds]
    for listener in listeners:
        listener.setblocking(False)
    balancer.inherited = listeners  # type: ignore[attr-defined]
    if unix_path and any(listener.family == socket.AF_UNIX for listener in listeners):
        balancer._unix_path = unix_path  # unlinked at stop, as if bound here


def restore_stats(balancer: "Balancer", data: dict[str, Any]) -> None:
    """Counters go on from where the old master left them; gauges (in flight, open
    WebSockets) are counted again from what is adopted."""
    stats = balancer.stats
    for worker_id, saved in dict(data.get("upstreams", {})).items():
        upstream = stats.upstream(worker_id)
        upstream.requests = {(str(m), int(c)): int(n) for m, c, n in saved.get("requests", [])}
        counts = [int(n) for n in saved.get("duration_counts", [])]
        if len(counts) == len(upstream.duration_counts):
            upstream.duration_counts = counts
        upstream.duration_sum = float(saved.get("duration_sum", 0.0))
        upstream.connect_errors = int(saved.get("connect_errors", 0))
    stats.retries = int(data.get("retries", 0))
    stats.client_errors = {str(k): int(v) for k, v in dict(data.get("client_errors", {})).items()}
    stats.bytes_received = int(data.get("bytes_received", 0))
    stats.bytes_sent = int(data.get("bytes_sent", 0))
    counts = [int(n) for n in data.get("queue_wait_counts", [])]
    if len(counts) == len(stats.queue_wait_counts):
        stats.queue_wait_counts = counts
    stats.queue_wait_sum = float(data.get("queue_wait_sum", 0.0))


class _Hold(asyncio.Protocol):
    """Holds what arrives until the real protocol takes the transport over. A loop may start
    reading after ``connection_made`` (uvloop does), so a read can come in anyway: it is kept
    (one read, then reading stops again) and given to the real protocol first."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.lost = False
        self.held: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.held.append(data)
        self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def hand_to(self, protocol: Any) -> None:
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)

    def release(self, protocol: Any) -> None:
        held, self.held = self.held, []
        if held:
            protocol.data_received(b"".join(held))
        self.transport.resume_reading()


async def _held(fd: int) -> _Hold:
    hold = _Hold()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: hold, sock)
    return hold


async def adopt_tunnel(balancer: "Balancer", record: TunnelRecord) -> bool:
    """Relay one handed-over WebSocket again; False if its worker is gone (then it is closed)."""
    context = balancer.context
    upstream = balancer.upstreams.get(record.worker_id)
    client_side, worker_side = await _held(record.client_fd), await _held(record.worker_fd)
    if upstream is None or client_side.lost or worker_side.lost:
        client_side.transport.close()
        worker_side.transport.close()
        return False
    client, conn = ClientConnection(context), UpstreamConnection(context, upstream)
    client_side.hand_to(client)
    worker_side.hand_to(conn)
    exchange = Exchange(context.loop.time())
    exchange.state = TUNNEL  # the exchange that opened it lived in the old master
    exchange.upstream = upstream
    responder = client.responder
    conn.become_tunnel(responder)
    responder.tunnel, responder.tunnel_exchange = conn, exchange
    upstream.stats.websockets += 1
    client_side.release(client)
    worker_side.release(conn)
    return True


async def adopt_client(balancer: "Balancer", fd: int) -> None:
    """An idle keep-alive client: served as a new connection (bytes it sent meanwhile wait
    in the kernel, unread)."""
    hold = await _held(fd)
    if hold.lost:
        return
    client = ClientConnection(balancer.context)
    hold.hand_to(client)
    hold.release(client)


async def adopt_connections(master: Master, state: UpgradeState) -> str:
    """After the workers are adopted (their upstreams exist): tunnels and idle clients."""
    balancer: Any = master.front.proxy  # type: ignore[attr-defined]
    tunnels = 0
    for record in state.tunnels:
        try:
            tunnels += await adopt_tunnel(balancer, record)
        except OSError as exc:
            master.output.fleet(f"upgrade: a WebSocket of {record.worker_id} could not be adopted: {exc}")
    clients = 0
    for fd in state.client_fds:
        try:
            await adopt_client(balancer, fd)
            clients += 1
        except OSError:
            pass  # that client went away meanwhile
    from fleet.supervisor.adoption import drain_adopted

    assert master.supervisor is not None
    drain_adopted(master.supervisor)
    return f"{len(state.workers)} workers, {tunnels} WebSockets and {clients} idle connections adopted"


__all__ = ["take_state", "prepare_front", "restore_stats", "adopt_tunnel", "adopt_client", "adopt_connections",
           "adopted"]


async def adopted(master: Master, state: UpgradeState) -> None:
    """In place of the supervisor's start: the old master's workers, counters and history."""
    import fleet
    from fleet.config import replace
    from fleet.supervisor.adoption import adopt_workers
    from fleet.supervisor.settings import SupervisorViews

    supervisor = master.supervisor
    assert supervisor is not None
    # This run's secrets (cookie secret, session key) as the workers have them, not new ones.
    master.config = replace(master.config, bokeh_environment=tuple((n, v) for n, v in state.bokeh_environment))
    supervisor.views = SupervisorViews.of(master.config)
    restore_stats(master.front.proxy, state.stats)  # type: ignore[attr-defined]
    adopt_workers(supervisor, state)
    reloads = master.config_reloads
    for result, count in dict(state.config_reloads.get("counts", {})).items():
        reloads.counts[str(result)] = int(count)
    reloads.last = state.config_reloads.get("last")
    supervisor.last_reload = state.last_reload
    master.fleet_started_at = state.fleet_started_at
    master.upgrades.restore(state.upgrades)
    message = f"upgraded from {state.written_by} to {fleet.__version__}"
    master.upgrades.record("done", message, (state.written_by, fleet.__version__))
    master.output.fleet(f"upgrade: {message} (pid {os.getpid()})")
