"""A delay line between two network namespaces: the added round-trip time of bench/pageload.py.

This machine's kernel has no ``sch_netem`` (only tbf, htb and pfifo), so the link is two TUN
devices, one in each namespace, and this process carries every packet from one to the other,
holding it for half the round-trip time. The rate limit stays in the kernel (tbf on each TUN's
egress); only the delay is here. Without ``IFF_VNET_HDR`` a TUN carries MTU-sized packets, so
tbf shapes real packets, not 64 KiB GSO segments.

Run by the bench: ``python pageload_delay.py SERVER_NS CLIENT_NS DELAY_MS``; it creates both
TUNs (they vanish when it exits), moves them into the namespaces, prints ``ready`` and forwards
until SIGTERM. The queue is bounded (packets past it are dropped, as a router's would be).
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_QUEUED = 20_000  # packets held at once: at 20 Mbit/s and 100 ms, about 170 are in flight
READS_PER_WAKE = 64
PR_SET_PDEATHSIG = 1


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class DelayLine:
    """Packets read from one TUN are written to the other ``delay`` seconds later, in order."""

    def __init__(self, fds: tuple[int, int], delay: float, clock=time.monotonic) -> None:
        self.peer = {fds[0]: fds[1], fds[1]: fds[0]}
        self.delay = delay
        self.clock = clock
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.sequence = 0
        self.dropped = 0

    def receive(self, fd: int) -> None:
        for _ in range(READS_PER_WAKE):
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            if len(self.queue) >= MAX_QUEUED:
                self.dropped += 1
                continue
            self.sequence += 1
            heapq.heappush(self.queue, (self.clock() + self.delay, self.sequence, self.peer[fd], packet))

    def send_due(self) -> float | None:
        """Write every packet whose time has come; return seconds until the next one."""
        while self.queue:
            due, _, fd, packet = self.queue[0]
            wait = due - self.clock()
            if wait > 0:
                return wait
            heapq.heappop(self.queue)
            try:
                os.write(fd, packet)
            except OSError:  # the namespace's stack refused it (queue full): a lost packet
                self.dropped += 1
        return None

    def run(self) -> None:
        fds = list(self.peer)
        while True:
            readable, _, _ = select.select(fds, [], [], self.send_due())
            for fd in readable:
                self.receive(fd)


def main(server_ns: str, client_ns: str, delay_ms: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # If the bench is killed outright, end too: the TUNs go with this process.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    try:  # a late packet is added delay the bench did not ask for: run ahead of the browser
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
    except OSError:
        pass
    fds = []
    for namespace in (server_ns, client_ns):
        name = f"{namespace}-t"
        fds.append(open_tun(name))
        subprocess.run(["ip", "link", "set", name, "netns", namespace], check=True, timeout=10)
    print("ready", flush=True)
    DelayLine((fds[0], fds[1]), float(delay_ms) / 1000).run()


if __name__ == "__main__":
    main(*sys.argv[1:4])
