"""A small network of the test's own: network namespaces joined by veth pairs to a bridge that
lives in a namespace of its own (nothing is added to the root namespace), each node with an
address in ``SUBNET``. The test runs code in a node with ``Network.run`` (threads that entered
the namespace with setns(2); a process started from such a thread lives there too). Everything
is made and removed by ``Network`` itself, and it removes only the namespaces it made."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import pytest

T = TypeVar("T")
SUBNET = "10.213.7"  # a private /24 unlikely to be anyone's real network; it never leaves the bridge
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def need_netns() -> None:
    """Root and iproute2 (``ip netns``); locally a skip, in CI a failure."""
    missing = "ip (iproute2)" if shutil.which("ip") is None else "root" if os.geteuid() != 0 else None
    if missing:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"network namespaces need {missing}")
        pytest.skip(f"network namespaces need {missing}")


def enter(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({name}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class Network:
    """The bridge's namespace plus one namespace per node; ``add(node, host_byte)``."""

    def __init__(self) -> None:
        self.prefix = f"fltest-{uuid.uuid4().hex[:8]}"
        self.bridge = f"{self.prefix}-br"
        self.nodes: dict[str, str] = {}  # node -> address
        self._made: list[str] = []
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def __enter__(self) -> "Network":
        try:
            self._add_namespace(self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def add(self, node: str, host_byte: int) -> str:
        """A node on the bridge at SUBNET.host_byte; returns its address."""
        name, address = self.namespace(node), f"{SUBNET}.{host_byte}"
        self._add_namespace(name)
        port = f"v{len(self.nodes)}"
        _ip("-n", self.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        self.nodes[node] = address
        return address

    def pool(self, node: str, threads: int = 1) -> ThreadPoolExecutor:
        key = f"{node}/{threads}"
        if key not in self._pools:
            self._pools[key] = ThreadPoolExecutor(threads, thread_name_prefix=f"netns-{node}",
                                                  initializer=enter, initargs=(self.namespace(node),))
        return self._pools[key]

    def run(self, node: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args)`` in a thread inside ``node``'s namespace; its result."""
        return self.pool(node).submit(function, *args, **kwargs).result(timeout=120)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        self._made.clear()
