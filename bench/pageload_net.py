"""The shaped link bench/pageload.py measures over: two network namespaces joined by TUNs.

The servers live in one namespace, Chromium in the other; the only way between them is a pair of
TUN devices (one per namespace) with ``pageload_delay.py`` carrying packets between them after
half the added round-trip time. Each TUN's egress is shaped by a token bucket (``tbf``, the
rate). This kernel has no ``sch_netem``, hence the userspace delay line instead of a veth pair
with netem. Bytes on the wire are the client TUN's own counters (IP packets), read in the
client's namespace, so they count every byte whatever the browser says it fetched.

Names carry the bench's pid, so two benches (or a test and a bench) never touch each other's
namespaces, and ``remove`` deletes only what ``Link.create`` made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SERVER_ADDRESS = "10.231.0.1"
CLIENT_ADDRESS = "10.231.0.2"
DELAY_LINE = Path(__file__).resolve().parent / "pageload_delay.py"
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Shape:
    """What the link does to every packet: a rate limit and an added round-trip time."""

    rate_mbit: float
    rtt_ms: float

    def qdisc_command(self, namespace: str, device: str) -> list[str]:
        """tbf on the device's egress; its queue (``latency``) is long enough not to drop a
        browser's burst of parallel requests at this rate."""
        return ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device, "root",
                "tbf", "rate", f"{self.rate_mbit}mbit", "burst", "16kb", "latency", "500ms"]


def address_commands(server_ns: str, client_ns: str, shape: Shape) -> list[list[str]]:
    """Addresses, routes and shaping once the TUNs are in place (pure, so a test can read them)."""
    commands = []
    for namespace, address, peer in ((server_ns, SERVER_ADDRESS, CLIENT_ADDRESS),
                                     (client_ns, CLIENT_ADDRESS, SERVER_ADDRESS)):
        device = f"{namespace}-t"
        commands += [["ip", "-n", namespace, "link", "set", "lo", "up"],
                     ["ip", "-n", namespace, "addr", "add", address, "peer", peer, "dev", device],
                     ["ip", "-n", namespace, "link", "set", device, "up"],
                     shape.qdisc_command(namespace, device)]
    return commands


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")


class Link:
    """The two namespaces and the shaped link between them; ``remove`` undoes ``create``."""

    def __init__(self, shape: Shape, tag: str | None = None, nice: int = 0) -> None:
        tag = tag or str(os.getpid())
        # What runs in the namespaces (servers, browsers) at this niceness: below 0 it gets the
        # CPU before the rest of a shared machine, so its parse and paint wait less on others.
        self.nice = ["nice", "-n", str(nice)] if nice else []
        # Interface names are at most 15 characters: "fpl<tag>s-t" keeps a pid short enough.
        self.server_ns = f"fpl{tag}s"
        self.client_ns = f"fpl{tag}c"
        self.client_dev = f"{self.client_ns}-t"
        self.shape = shape
        self.created: list[str] = []
        self.delay_line: subprocess.Popen[str] | None = None

    def create(self) -> None:
        for namespace in (self.server_ns, self.client_ns):
            run(["ip", "netns", "add", namespace])
            self.created.append(namespace)
        self.delay_line = subprocess.Popen(
            [sys.executable, str(DELAY_LINE), self.server_ns, self.client_ns, str(self.shape.rtt_ms / 2)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.delay_line.stdout is not None
        line = self.delay_line.stdout.readline()  # "ready", or EOF if it failed (its error on stderr)
        if line.strip() != "ready":
            raise RuntimeError("the delay line did not start (is /dev/net/tun there, are we root?)")
        for command in address_commands(self.server_ns, self.client_ns, self.shape):
            run(command)

    def remove(self) -> None:
        """Stop the delay line (its TUNs go with it) and delete the namespaces made here."""
        if self.delay_line is not None:
            self.delay_line.terminate()
            try:
                self.delay_line.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.delay_line.kill()
                self.delay_line.wait()
            self.delay_line = None
        for namespace in reversed(self.created):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=10)
        self.created.clear()

    def in_server(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *self.nice, *argv]

    def in_client(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns, *self.nice, *argv]

    def __enter__(self) -> Link:
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def wire_bytes(device: str, sys_class_net: Path = Path("/sys/class/net")) -> int:
    """Bytes the device sent plus received so far (read inside its namespace)."""
    stats = sys_class_net / device / "statistics"
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def namespaces() -> list[str]:
    """The network namespaces that exist now (to check that a run left none of its own)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
