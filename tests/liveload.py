"""Load that must go through a change of a running fleet untouched (``fleet reload``, ``fleet
upgrade``): ``wrk`` keep-alive requests, N WebSocket clients exchanging a message every
``interval`` seconds, and optionally open Bokeh pages in Chromium. ``stop()`` returns what
failed, counted: the test asserts zeros.

    load = LiveLoad(port, websockets=30, exchange=Echo("/ws"), pages=pages)
    load.start()            # returns once every WebSocket is open and has had one answer
    ... change the fleet ...
    result = load.stop()    # every WebSocket and page must still answer here
    assert result.failures() == [], result.summary()

What counts as a failure:
- wrk: a non-2xx/3xx answer, a read/write error or a timeout (wrk counts a keep-alive
  connection closed under it as a read error), a refused connection (``refused``);
- a WebSocket closed, or an answer missing after ``answer_timeout`` (each client waits for the
  answer to one message before sending the next, so a stalled tunnel shows);
- a page whose next click does not come back over its WebSocket (``BokehPage.press_add``), or
  whose console says its WebSocket was lost.

Bokeh sessions are counted from the example app's ``session created on`` lines (``bokeh_sessions``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import websocket

from support import http_get, require_tool

WRK_DURATION = 3600  # wrk runs until stop() interrupts it (SIGINT: it prints its totals)


class Exchange(Protocol):
    """How one WebSocket client opens its connection and exchanges one message."""

    def open(self, port: int) -> websocket.WebSocket: ...

    def exchange(self, sock: websocket.WebSocket, n: int) -> None:
        """Send message ``n`` and return once its answer arrived (raise if it does not)."""


@dataclass(frozen=True)
class Echo:
    """An echo endpoint (tests/apps/backend.py ``/ws`` answers ``"<worker>: <text>"``)."""

    path: str = "/ws"
    origin: str | None = None  # default: http://127.0.0.1:PORT
    timeout: float = 10.0

    def open(self, port: int) -> websocket.WebSocket:
        return websocket.create_connection(f"ws://127.0.0.1:{port}{self.path}", timeout=self.timeout,
                                           origin=self.origin or f"http://127.0.0.1:{port}")

    def exchange(self, sock: websocket.WebSocket, n: int) -> None:
        text = f"m{n}"
        sock.send(text)
        reply = sock.recv()
        if not (isinstance(reply, str) and reply.endswith(text)):
            raise AssertionError(f"echo of {text!r}: {reply!r}")


@dataclass(frozen=True)
class BokehServerInfo:
    """A Bokeh session's own WebSocket, as a page holds it: the page is fetched (one session,
    its token and affinity cookie), then ``SERVER-INFO-REQ`` is sent every interval and its
    ``SERVER-INFO-REPLY`` awaited: the message Bokeh's protocol answers without a document."""

    path: str  # the app's path, e.g. /bokeh_random
    timeout: float = 10.0

    def open(self, port: int) -> websocket.WebSocket:
        import http.client

        connection = http.client.HTTPConnection("localhost", port, timeout=self.timeout)
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            page = response.read().decode("utf-8", "replace")
            cookies = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
        finally:
            connection.close()
        if response.status != 200:
            raise AssertionError(f"GET {self.path}: {response.status}")
        token = re.search(r'"token":\s*"([^"]+)"', page) or re.search(r"token\s*=\s*'([^']+)'", page)
        if token is None:
            raise AssertionError(f"no session token in the page at {self.path}")
        headers = [f"Cookie: {'; '.join(cookies)}"] if cookies else []
        sock = websocket.create_connection(
            f"ws://localhost:{port}{self.path}/ws", timeout=self.timeout, origin=f"http://localhost:{port}",
            subprotocols=["bokeh", token.group(1)], header=headers)
        header = self._message(sock)  # the server's ACK
        if header.get("msgtype") != "ACK":
            raise AssertionError(f"Bokeh sent {header} instead of ACK")
        return sock

    def exchange(self, sock: websocket.WebSocket, n: int) -> None:
        msgid = f"live{n}"
        for part in ({"msgid": msgid, "msgtype": "SERVER-INFO-REQ"}, {}, {}):
            sock.send(json.dumps(part))
        while True:  # a reply to this request, whatever else the server pushes first
            header = self._message(sock)
            if header.get("reqid") == msgid:
                if header.get("msgtype") != "SERVER-INFO-REPLY":
                    raise AssertionError(f"Bokeh answered {header}")
                return

    @staticmethod
    def _message(sock: websocket.WebSocket) -> dict[str, Any]:
        """One Bokeh message: header, metadata and content frames, then its buffers."""
        header = json.loads(sock.recv())
        sock.recv()
        sock.recv()
        for _ in range(int(header.get("num_buffers", 0))):
            sock.recv()
        return header


@dataclass
class LiveLoadResult:
    requests: int = 0  # answered by the fleet, as wrk counts them
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # wrk's connect/read/write/timeout
    websockets: int = 0  # opened at start
    websockets_closed: int = 0  # closed or failed before stop()
    exchanges: int = 0  # messages answered
    answers_missing: int = 0
    pages: int = 0
    pages_failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the assertion message
    wrk_output: str = ""

    @property
    def failed_requests(self) -> int:
        """Requests that got no good answer: bad statuses and read/write errors and timeouts."""
        return self.non_2xx_3xx + sum(v for k, v in self.socket_errors.items() if k != "connect")

    @property
    def refused(self) -> int:
        return self.socket_errors.get("connect", 0)

    def failures(self) -> list[str]:
        """Each kind of failure with its count; empty when nothing failed."""
        counts = {"failed requests": self.failed_requests, "refused connections": self.refused,
                  "WebSockets closed": self.websockets_closed, "answers missing": self.answers_missing,
                  "pages failed": self.pages_failed}
        failed = [f"{count} {what}" for what, count in counts.items() if count]
        return failed + (["no request answered (wrk)"] if self.requests == 0 else [])

    def summary(self) -> str:
        return (f"{self.requests} requests ({self.failed_requests} failed, {self.refused} refused), "
                f"{self.websockets} WebSockets ({self.websockets_closed} closed, {self.exchanges} "
                f"exchanges, {self.answers_missing} answers missing), {self.pages} pages "
                f"({self.pages_failed} failed); errors: {self.errors[:5]}")


def parse_wrk(text: str) -> tuple[int, int, dict[str, int]]:
    """(requests, non-2xx/3xx answers, socket errors) from wrk's summary."""
    done = re.search(r"(\d+) requests in", text)
    if done is None:
        raise AssertionError(f"wrk printed no summary:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors else {}
    return int(done.group(1)), int(bad.group(1)) if bad else 0, socket_errors


class Page(Protocol):
    """What LiveLoad needs of an open page (tests/browser/bokeh_page.py ``BokehPage``)."""

    def press_add(self, timeout: float = 10.0) -> int: ...

    def read_console(self) -> list[str]: ...


class LiveLoad:
    """wrk + WebSocket clients + pages, from ``start()`` to ``stop()``."""

    def __init__(self, port: int, *, path: str = "/", connections: int = 4, websockets: int = 30,
                 exchange: Exchange | None = None, interval: float = 0.1, answer_timeout: float = 10.0,
                 pages: Sequence[Page] = (), host: str = "127.0.0.1") -> None:
        self.port = port
        self.url = f"http://{host}:{port}{path}"
        self.connections = connections
        self.exchange = exchange or Echo()
        self.interval = interval
        self.answer_timeout = answer_timeout
        self.pages = list(pages)
        self._count = websockets
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._result = LiveLoadResult()
        self._threads: list[threading.Thread] = []
        self._wrk: subprocess.Popen[str] | None = None

    # -- start / stop ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "LiveLoad":
        """Start wrk, open every WebSocket (each answers once); the pages are already open."""
        wrk = require_tool("wrk")
        sockets = [self._open() for _ in range(self._count)]
        self._result.websockets = len(sockets)
        ready = threading.Barrier(len(sockets) + 1, timeout=timeout)
        self._threads = [threading.Thread(target=self._client, args=(i, s, ready), daemon=True)
                         for i, s in enumerate(sockets)]
        for thread in self._threads:
            thread.start()
        ready.wait()
        # nice: the load must not starve the fleet it loads on a shared machine.
        self._wrk = subprocess.Popen(
            ["nice", "-n", "10", wrk, "-t", "1", "-c", str(self.connections), "-d", f"{WRK_DURATION}s",
             "--timeout", f"{self.answer_timeout:g}s", self.url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for page in self.pages:  # each page answers before the change
            page.press_add()
        self._result.pages = len(self.pages)
        return self

    def stop(self) -> LiveLoadResult:
        """Stop everything; each WebSocket and page must answer once more first."""
        result = self._result
        for page in self.pages:
            try:
                page.press_add()
            except Exception as exc:  # noqa: BLE001 - counted and shown, not raised
                result.pages_failed += 1
                result.errors.append(f"page: {type(exc).__name__}: {exc}")
            else:
                if any("Lost websocket" in line for line in page.read_console()):
                    result.pages_failed += 1
                    result.errors.append("page: its console says the WebSocket was lost")
        with self._lock:
            before = result.exchanges
        deadline = time.monotonic() + self.answer_timeout + 5
        while time.monotonic() < deadline:  # every open client answered once more since now
            with self._lock:
                if result.exchanges >= before + (result.websockets - result.websockets_closed):
                    break
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.answer_timeout + 5)
        if self._wrk is not None:
            self._wrk.send_signal(signal.SIGINT)
            try:
                out, _ = self._wrk.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self._wrk.kill()
                out, _ = self._wrk.communicate()
            result.wrk_output = out
            result.requests, result.non_2xx_3xx, result.socket_errors = parse_wrk(out)
        return result

    def __enter__(self) -> "LiveLoad":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self._wrk is not None and self._wrk.poll() is None:
                self._wrk.kill()
                self._wrk.communicate()

    # -- the WebSocket clients -------------------------------------------------------------------
    def _open(self) -> websocket.WebSocket:
        sock = self.exchange.open(self.port)
        sock.settimeout(self.answer_timeout)
        return sock

    def _client(self, index: int, sock: websocket.WebSocket, ready: threading.Barrier) -> None:
        n = 0
        try:
            try:
                self.exchange.exchange(sock, n)
            finally:
                ready.wait()
            while not self._stop.wait(self.interval):
                n += 1
                self.exchange.exchange(sock, n)
                with self._lock:
                    self._result.exchanges += 1
        except websocket.WebSocketTimeoutException as exc:
            self._failed(index, "answers_missing", exc)
        except Exception as exc:  # noqa: BLE001 - closed, reset, a wrong answer: counted
            self._failed(index, "websockets_closed", exc)
        finally:
            sock.close()

    def _failed(self, index: int, what: str, exc: BaseException) -> None:
        with self._lock:
            setattr(self._result, what, getattr(self._result, what) + 1)
            if len(self._result.errors) < 20:
                self._result.errors.append(f"WebSocket {index}: {type(exc).__name__}: {exc}")


# -- Bokeh sessions --------------------------------------------------------------------------------

SESSION_LINE = re.compile(r"^(g\d+w\d+):\d+ \| session created on (g\d+w\d+)", re.MULTILINE)


def bokeh_sessions(fleet: Any) -> Counter[str]:
    """Bokeh sessions created so far per worker, from examples/bokeh_random's ``session created
    on wN`` lines in fleet's output. A request for a missing page sent straight to each worker
    is a barrier: once its 404 line shows, every line that worker printed before it has too."""
    marker = f"/fleet-test-barrier-{uuid.uuid4().hex}"
    for worker in fleet.status()["workers"]:
        if worker["state"] not in ("ready", "draining"):
            continue
        assert http_get(f"http://127.0.0.1:{worker['port']}{marker}")[0] == 404
        fleet.proc.wait_for_output(rf"(?m)^{worker['id']}:\d+ \| 404 GET {marker}", timeout=10)
    return Counter(worker for _, worker in SESSION_LINE.findall(fleet.proc.output()))


__all__ = ["BokehServerInfo", "Echo", "Exchange", "LiveLoad", "LiveLoadResult", "bokeh_sessions", "parse_wrk"]
