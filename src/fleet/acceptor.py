"""An accept loop on a listening socket that survives running out of file descriptors.

uvloop's servers (``loop.create_server``, ``asyncio.start_unix_server``) close their listening
socket for good on the first EMFILE from ``accept`` (the listen callback's error is "fatal"):
fleet's control socket stopped answering forever after one burst of clients past ``ulimit
-n``. ``Acceptor`` accepts itself, as ``balancer.server`` does for the proxy: a readiness
callback accepts up to ``PER_WAKE`` connections, and on EMFILE/ENFILE it pauses and tries
again after ``RETRY`` seconds (nginx's ``accept_mutex_delay``), leaving the client in the
backlog meanwhile.

What this is not: it knows nothing of what is served; ``on_socket`` gets each connection.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Callable

PER_WAKE = 16
RETRY = 0.25
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    """Accepts on ``listener`` (non-blocking, listening) and hands each socket to ``on_socket``."""

    def __init__(self, listener: socket.socket, on_socket: Callable[[socket.socket], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.listener = listener
        self.on_socket = on_socket
        self.loop = loop or asyncio.get_running_loop()
        self.failures = 0  # accepts that failed for want of a resource
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        if not self._reading and not self._closed:
            self.loop.add_reader(self.listener.fileno(), self._accept)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.listener.fileno())
            self._reading = False

    def _resume(self) -> None:
        self._retry = None
        self.start()

    def _accept(self) -> None:
        for _ in range(PER_WAKE):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self.failures += 1
                    self._pause()
                    if self._retry is None:
                        self._retry = self.loop.call_later(RETRY, self._resume)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            sock.setblocking(False)
            try:
                self.on_socket(sock)
            except Exception:
                sock.close()  # never an accepted socket without a reader
                raise

    def close(self) -> None:
        """Stop accepting and close the listening socket."""
        self._closed = True
        self._pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.listener.close()


__all__ = ["Acceptor", "OUT_OF_RESOURCES", "PER_WAKE", "RETRY"]
