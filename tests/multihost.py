"""Several fleets, each on a "host" of its own (a network namespace of ``netns.Network``), a
dnsmasq answering ``fleet.test`` with their addresses, and ``fleet balance --resolve`` in front;
plus the scripted browser the tests drive through it (a page view without cookies, then its
WebSocket carrying the session's token, as BokehJS opens it)."""

from __future__ import annotations

import http.client
import re
import time
from pathlib import Path
from typing import Sequence

import websocket  # websocket-client

from dns_helpers import Dnsmasq
from fleet.hostids import split_host
from netns import SUBNET, Network
from support import EXAMPLES, FleetProcess, start_fleet
from test_bokeh_parity import TOKEN, session_id_of

APP = str(EXAMPLES / "bokeh_random")
PORT = 8000  # every host's proxy and the front's: each node has its own network
NAME = "fleet.test"
FRONT = f"{SUBNET}.2"
DNS = f"{SUBNET}.53"
TTL = 2  # seconds: dnsmasq's --local-ttl for the hosts' records


def host_address(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


class Cluster:
    """The network, the hosts (``h1``...), the DNS server and the front tier of one test."""

    def __init__(self, network: Network, directory: Path) -> None:
        self.network = network
        self.directory = directory
        self.hosts: dict[str, FleetProcess] = {}
        self.stopped: list[FleetProcess] = []
        self.front: FleetProcess | None = None
        self.dns: Dnsmasq | None = None
        network.add("front", 2)
        network.add("dns", 53)

    # -- starting --------------------------------------------------------------------------------
    def add_host(self, index: int) -> str:
        name = f"h{index}"
        if name not in self.network.nodes:
            self.network.add(name, 10 + index)
        return name

    def start_host(self, index: int) -> FleetProcess:
        name = self.add_host(index)
        old = self.hosts.get(name)
        if old is not None:
            self.stopped.append(old)
        proc = self.network.run(name, start_fleet, "up", APP, "-n", "2", "--host-id", name, "--address", "0.0.0.0",
                                "--port", str(PORT), "--base-port", "5100", "--surge-base-port", "5200",
                                "--control-socket", str(self.directory / f"{name}.sock"),
                                "--allow-websocket-origin", f"{FRONT}:{PORT}", cwd=str(self.directory))
        self.hosts[name] = proc
        return proc

    def start_hosts(self, indices: Sequence[int]) -> None:
        for index in indices:
            self.start_host(index)
        for index in indices:
            self.hosts[f"h{index}"].wait_for_output(r"ready: open http://", timeout=100)

    def records(self, indices: Sequence[int]) -> list[str]:
        return [f"{host_address(index)} {NAME}" for index in indices]

    def start_dns(self, indices: Sequence[int]) -> Dnsmasq:
        if self.dns is None:
            self.dns = Dnsmasq(self.directory, DNS, 53, ttl=TTL)
        self.dns.write(self.records(indices))
        self.network.run("dns", self.dns.start)
        return self.dns

    def answer(self, indices: Sequence[int]) -> None:
        """Change what the DNS server answers (it re-reads its hosts file on SIGHUP)."""
        assert self.dns is not None
        self.dns.write(self.records(indices))
        self.dns.reread()

    def start_front(self, *options: str) -> FleetProcess:
        self.front = self.network.run("front", start_fleet, "balance", "--resolve", f"{NAME}:{PORT}",
                                      "--resolver", DNS, "--address", "0.0.0.0", "--port", str(PORT),
                                      "--allow-websocket-origin", f"{FRONT}:{PORT}", "--dns-min-ttl", "1", *options)
        self.front.wait_for_output(r"fleet \S+ balance \(pid", timeout=30)
        return self.front

    def close(self) -> None:
        for proc in [*self.hosts.values(), *self.stopped, *([self.front] if self.front else [])]:
            proc.stop(timeout=10)
        if self.dns is not None:
            self.dns.stop()

    # -- what a browser does, from the front's namespace --------------------------------------
    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        return self.network.run("front", _get, FRONT, path, timeout)

    def view(self) -> tuple[str, str, str]:
        """One page view without cookies: (host, session id, token) of the session it made."""
        status, page = self.get("/bokeh_random")
        assert status == 200, page[:300]
        session_id = session_id_of(page)
        host, _ = split_host(session_id)
        assert host is not None, session_id
        return host, session_id, TOKEN.search(page.decode()).group(1)  # type: ignore[union-attr]

    def open_socket(self, token: str) -> websocket.WebSocket:
        """The page's WebSocket with its token (and no cookie); open once Bokeh ACKs it."""
        return self.network.run("front", _open_socket, token)

    def sessions(self, host: str) -> int:
        """Sessions created on ``host`` so far (the app prints a line per session)."""
        return self.hosts[host].output().count("session created on")


def _get(address: str, path: str, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(address, PORT, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": f"{address}:{PORT}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _open_socket(token: str) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://{FRONT}:{PORT}/bokeh_random/ws", timeout=10,
                                     subprotocols=["bokeh", token], origin=f"http://{FRONT}:{PORT}")
    ws.recv()  # Bokeh's ACK: the session is open there
    return ws


def wait_for(condition, timeout: float, message: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {message}")
        time.sleep(interval)


UP_LINE = re.compile(r"host (h\d+) at \S+ is up")


class Load:
    """Idempotent GETs through the front from ``threads`` threads until stopped: (time, status
    or the error's name) of each, to see what failed when."""

    def __init__(self, cluster: Cluster, path: str = "/fleet-load-probe", threads: int = 2) -> None:
        import threading

        self.cluster, self.path = cluster, path
        self.results: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._pool = cluster.network.pool("front", threads)
        self._futures = [self._pool.submit(self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                outcome: object = _get(FRONT, self.path, 5.0)[0]
            except OSError as exc:
                outcome = type(exc).__name__
            self.results.append((time.monotonic(), outcome))
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=30)

    def failures(self, after: float) -> list[tuple[float, object]]:
        return [(t, o) for t, o in self.results if t > after and not (isinstance(o, int) and o < 500)]


def alive(ws: websocket.WebSocket) -> bool:
    """A ping through the front, the host's proxy and the worker comes back as a pong."""
    try:
        ws.ping(b"fleet")
        for _ in range(10):  # the rest of Bokeh's ACK message (metadata, content) may come first
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PONG:
                return frame.data == b"fleet"
    except (OSError, websocket.WebSocketException):
        return False
    return False
