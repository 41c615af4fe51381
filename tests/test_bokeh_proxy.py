"""The proxy's Bokeh side, end to end over HTTP and WebSocket.

- Requests that name a Bokeh session (``bokeh-session-id``, ``Bokeh-Session-Id``, the
  WebSocket's token) reach the worker that holds it, without any cookie; ids made outside
  any worker meet on one worker by rendezvous hash.
- ``<prefix>/static/`` and an app's ``static/`` come from the proxy (no worker counts a
  request), with ETag/304 and HEAD; ``/static/extensions/`` and traversal attempts do not.
- The affinity cookie's Path follows --prefix.
"""

from __future__ import annotations

import http.client
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
import websocket  # websocket-client

from support import EXAMPLES, http_get
from test_bokeh_parity import APPS, TOKEN, session_id_of, start
from up_helpers import Fleet

BOKEH_APP = str(EXAMPLES / "bokeh_random")
# Worker ids are g<generation>w<index> (g3w1).
SESSION_LINE = re.compile(r"^(g\d+w\d+):\d+ \| session created on (g\d+w\d+)", re.MULTILINE)


def sessions_per_worker(fleet: Fleet) -> Counter[str]:
    """Sessions created so far per worker; a 404 sent straight to each worker is a barrier for
    its output (see tests/browser/test_bokeh_random.py)."""
    marker = f"/fleet-test-barrier-{uuid.uuid4().hex}"
    for worker in fleet.status()["workers"]:
        assert http_get(f"http://127.0.0.1:{worker['port']}{marker}")[0] == 404
        fleet.proc.wait_for_output(rf"(?m)^{worker['id']}:\d+ \| 404 GET {marker}", timeout=10)
    return Counter(worker for _, worker in SESSION_LINE.findall(fleet.proc.output()))


def worker_requests(fleet: Fleet) -> int:
    return sum(worker["requests"] for worker in fleet.status()["workers"])


def test_requests_naming_a_session_reach_its_worker_without_cookies(tmp_path: Path) -> None:
    fleet = start(tmp_path, BOKEH_APP, workers=3)
    with fleet.proc:
        url = f"http://127.0.0.1:{fleet.port}/bokeh_random"
        status, _, page = http_get(url)
        assert status == 200
        session_id = session_id_of(page)
        maker = session_id.split("-", 1)[0]
        token = TOKEN.search(page.decode()).group(1)  # type: ignore[union-attr]
        for _ in range(4):
            assert http_get(f"{url}?bokeh-session-id={session_id}")[0] == 200
            assert http_get(url, headers={"Bokeh-Session-Id": session_id})[0] == 200
        for _ in range(3):  # the browser's WebSocket, carrying the token, without a cookie
            ws = websocket.create_connection(f"ws://127.0.0.1:{fleet.port}/bokeh_random/ws", timeout=10,
                                             subprotocols=["bokeh", token], origin=f"http://localhost:{fleet.port}")
            ws.recv()  # Bokeh's ACK: the session is open there
            ws.close()
        outside = f"outside-{uuid.uuid4().hex}"  # as pull_session() in a Flask view would make
        for _ in range(6):
            assert http_get(f"{url}?bokeh-session-id={outside}")[0] == 200
        sessions = sessions_per_worker(fleet)
        assert sum(sessions.values()) == 2, sessions  # one for each id, however often named
        assert sessions[maker] >= 1


def test_static_files_come_from_the_proxy(tmp_path: Path) -> None:
    fleet = start(tmp_path, BOKEH_APP, str(APPS / "gallery"), "--prefix", "/dash", workers=2)
    with fleet.proc:
        base = f"http://127.0.0.1:{fleet.port}/dash"
        status, headers, _ = http_get(f"{base}/bokeh_random")
        assert status == 200 and "Path=/dash;" in headers["Set-Cookie"]
        before = worker_requests(fleet)
        status, headers, body = http_get(f"{base}/static/js/bokeh.min.js?v=abc")
        assert status == 200 and len(body) == int(headers["Content-Length"]) > 100_000
        assert "immutable" in headers["Cache-Control"] and headers["Content-Type"].startswith("text/javascript")
        etag = headers["ETag"]
        assert http_get(f"{base}/static/js/bokeh.min.js", headers={"If-None-Match": etag})[0] == 304
        assert http_get(f"{base}/static/js/bokeh.min.js",
                        headers={"If-Modified-Since": headers["Last-Modified"]})[0] == 304
        assert http_get(f"{base}/gallery/static/hello.txt")[2] == b"hello from gallery static\n"
        connection = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=5)
        connection.request("HEAD", "/dash/gallery/static/hello.txt")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "26" and response.read() == b""
        connection.request("GET", "/dash/gallery/static/hello.txt")  # the same keep-alive connection
        assert connection.getresponse().read() == b"hello from gallery static\n"
        connection.close()
        assert http_get(f"{base}/static/..%2f..%2f..%2fetc/passwd")[0] == 404
        assert http_get(f"{base}/static/js/no-such-file.js")[0] == 404
        assert worker_requests(fleet) == before  # none of these reached a worker
        http_get(f"{base}/static/extensions/none.js")  # Bokeh's runtime extensions: the workers'
        assert worker_requests(fleet) == before + 1


@pytest.mark.slow
def test_pipelined_static_requests_from_a_slow_reader_all_arrive_in_order(tmp_path: Path) -> None:
    """Answers wait while the client's socket is full (one file at a time), then all arrive."""
    import socket

    fleet = start(tmp_path, BOKEH_APP, workers=1)
    with fleet.proc:
        size = len(http_get(f"http://127.0.0.1:{fleet.port}/static/js/bokeh.min.js")[2])
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        client.settimeout(10)
        client.connect(("127.0.0.1", fleet.port))
        count = 12
        client.sendall(b"GET /static/js/bokeh.min.js?v=1 HTTP/1.1\r\nHost: localhost\r\n\r\n" * count)
        received = bytearray()
        expected = count * size
        while received.count(b"HTTP/1.1 200 OK") < count or len(received) < expected:
            chunk = client.recv(1 << 20)
            assert chunk, f"closed after {len(received)} bytes"
            received += chunk
        client.close()
        assert received.count(b"HTTP/1.1 200 OK") == count and len(received) < expected + count * 400


def test_a_reload_serves_the_new_bytes_of_a_changed_static_file(tmp_path: Path) -> None:
    """A deploy changes an app's static file and reloads: the proxy answers the new bytes with
    a new ETag (and an app's new ``static/`` directory is served too). Until the reload it keeps
    what it read, the files of the generation that serves."""
    import shutil

    gallery = tmp_path / "gallery"
    shutil.copytree(APPS / "gallery", gallery, ignore=shutil.ignore_patterns("__pycache__"))
    fleet = start(tmp_path, str(gallery), workers=1)
    with fleet.proc:
        url = f"http://127.0.0.1:{fleet.port}/gallery/static/hello.txt"
        status, headers, body = http_get(url)
        assert status == 200 and body == b"hello from gallery static\n"
        old_etag = headers["ETag"]
        before = worker_requests(fleet)
        (gallery / "static" / "hello.txt").write_bytes(b"hello from the new deploy\n")
        assert http_get(url)[2] == b"hello from gallery static\n"  # read once, kept in memory

        result = fleet.cli("reload")
        assert result.returncode == 0, result.stderr
        assert "generation 2 ready" in result.stdout
        status, headers, body = http_get(url, headers={"If-None-Match": old_etag})
        assert status == 200 and body == b"hello from the new deploy\n"
        assert headers["ETag"] != old_etag
        assert http_get(url, headers={"If-None-Match": headers["ETag"]})[0] == 304
        assert worker_requests(fleet) == before  # still the proxy's, not the workers'
