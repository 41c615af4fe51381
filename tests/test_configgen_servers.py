"""``fleet config nginx|apache|haproxy`` output run by the real servers in front of real workers.

One ``fleet up --no-proxy examples/tornado_hello.py -n 3`` serves the whole module; each test
renders a configuration for it on a free port, starts nginx / Apache / HAProxy in the
foreground with that file (pid file, logs and temp files under tmp_path) and talks to it with
real HTTP and WebSocket clients. Every server is stopped by its pid in ``finally``.
The ``-t`` / ``-c`` checks run every variant (TLS, unix socket, --upstream, Bokeh /static/).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import websocket

from fleet.config import Config, build_config
from fleet.configgen import Deployment, render
from support import EXAMPLES, alive, free_port, http_get, kill_group, port_open, require_tool, wait_until
from up_helpers import Fleet, run_cli, up, workers_without_proxy

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")
BOKEH_APP = str(EXAMPLES / "bokeh_random")
SERVERS = ("nginx", "apache", "haproxy")
BINARIES = {"nginx": "nginx", "apache": "apache2", "haproxy": "haproxy"}
IS_ROOT = os.geteuid() == 0
# As root the servers' worker processes must drop privileges (Apache refuses to serve as root).
RUN_AS = {"user": "nobody", "group": "nogroup"} if IS_ROOT else {}

pytestmark = pytest.mark.timeout(120)


# -- the workers --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("fleet"), TORNADO_APP, workers=3) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1; the key beside it as CERT.key (HAProxy finds it there)."""
    openssl = require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "cert.pem.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )
    return str(cert), str(key)


def fleet_config(fleet: Fleet | None, port: int, **options: Any) -> Config:
    """The Config `fleet config` would build for these workers with a public --port."""
    cli: dict[str, Any] = {"workers": "3", "port": str(port)}
    if fleet is not None:
        cli["base_port"] = str(fleet.base_port)
    cli.update(options)
    app = cli.pop("app", TORNADO_APP)
    return build_config(cli, {}, {}, command="config", app=app)


def deployment(state_dir: Path, **overrides: Any) -> Deployment:
    values: dict[str, Any] = {
        "fleet_executable": shutil.which("fleet") or "/usr/local/bin/fleet",
        "working_directory": str(state_dir),
        "state_dir": str(state_dir),
        **RUN_AS,
    }
    values.update(overrides)
    return Deployment(**values)


# -- running a proxy -----------------------------------------------------------------------

def _command(kind: str, binary: str, conf: Path) -> list[str]:
    if kind == "nginx":
        return [binary, "-c", str(conf), "-g", "daemon off;"]
    if kind == "apache":
        return [binary, "-f", str(conf), "-DFOREGROUND"]
    return [binary, "-db", "-f", str(conf)]


def _log(state: Path) -> str:
    parts = []
    for name in ("server.out", "error.log"):
        path = state / name
        if path.exists():
            parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


@contextmanager
def running(kind: str, tmp_path: Path, config: Config, **overrides: Any) -> Iterator[subprocess.Popen[bytes]]:
    """The proxy of ``kind`` running ``config`` in the foreground; stopped (by pid) on exit."""
    binary = require_tool(BINARIES[kind])
    state = tmp_path / f"{kind}-state"
    state.mkdir()
    conf = state / f"{kind}.conf"
    conf.write_text(render(kind, config, deployment(state, **overrides)))
    with open(state / "server.out", "wb") as out:
        proc = subprocess.Popen(_command(kind, binary, conf), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{kind} exited with {proc.returncode}:\n{_log(state)}")
            if config.unix_socket and not os.path.exists(config.unix_socket):
                return False
            return port_open(config.port)

        try:
            wait_until(listening, 10, message=f"{kind} listening on {config.port}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_log(state)}") from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_group(proc.pid)  # Apache's and nginx's children share the group we created
        proc.wait(timeout=5)


def worker_of(body: bytes) -> str:
    """``w1`` from tornado_hello's "hello from w1 on port ..." or "slept ... in w1 on port ..."."""
    words = body.decode().split()
    return words[words.index("on") - 1]


def get(port: int, path: str = "/", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    return http_get(f"http://127.0.0.1:{port}{path}", **kwargs)


def upstream_ports(pid: int, ports: set[int]) -> set[int]:
    """Worker ports the proxy process tree has an established connection to right now."""
    found: set[int] = set()
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in tree:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port in ports:
                found.add(conn.raddr.port)
    return found


# -- behaviour through each proxy ----------------------------------------------------------

@pytest.mark.parametrize("kind", SERVERS)
def test_proxy_reaches_every_worker_echoes_websockets_and_passes_big_heads(
        kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()
    with running(kind, tmp_path, fleet_config(workers, port)):
        seen = set()
        for _ in range(9):
            status, _, body = get(port)
            assert status == 200, body
            seen.add(worker_of(body))
        assert seen == {"g1w0", "g1w1", "g1w2"}
        # A 40 KB header line, like Bokeh's session token, passes (nginx's default is 8k).
        status, _, body = get(port, headers={"X-Token": "t" * 40_000})
        assert status == 200 and body.startswith(b"hello from g1w")

        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5,
                                         header=["X-Token: " + "s" * 40_000])
        try:
            ws.send("ping")
            assert ws.recv().split(": ", 1)[1] == "ping"
            ws.send_binary(b"\x00\x01binary")
            assert ws.recv() == b"\x00\x01binary"
        finally:
            ws.close()


@pytest.mark.parametrize("kind", SERVERS)
def test_proxy_sends_new_requests_to_the_least_busy_workers(kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()
    worker_ports = {workers.base_port + index for index in range(3)}
    with running(kind, tmp_path, fleet_config(workers, port)) as proxy:
        slow: dict[str, Any] = {}

        def hold() -> None:
            slow["reply"] = get(port, "/slow?seconds=2.5", timeout=15)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            # The fresh proxy has no pooled connections yet: the first one it opens carries the
            # slow request, so its port names the busy worker.
            busy_port = wait_until(lambda: upstream_ports(proxy.pid, worker_ports), 5,
                                   message="the slow request in flight")
            assert isinstance(busy_port, set) and len(busy_port) == 1
            busy = f"g1w{busy_port.pop() - workers.base_port}"
            quick = [worker_of(get(port)[2]) for _ in range(6)]
        finally:
            holder.join(timeout=15)
        assert slow["reply"][0] == 200 and worker_of(slow["reply"][2]) == busy
        assert busy not in quick, (busy, quick)
        assert set(quick) == {"g1w0", "g1w1", "g1w2"} - {busy}


@pytest.mark.parametrize("kind", SERVERS)
def test_proxy_keeps_serving_while_fleet_restarts_a_killed_worker(kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()
    with running(kind, tmp_path, fleet_config(workers, port)):
        for _ in range(6):
            assert get(port)[0] == 200  # pooled connections to every worker now exist
        before = workers.worker("g1w1")
        os.kill(before["pid"], signal.SIGKILL)
        # From its death on (a request in flight at that instant may fail, as with fleet's own proxy).
        wait_until(lambda: not alive(before["pid"]), 5, interval=0.01, message="w1 gone")
        deadline = time.monotonic() + 2.5
        answers = []
        while time.monotonic() < deadline:
            status, _, body = get(port)
            answers.append((status, body))
        assert all(status == 200 for status, _ in answers), answers
        wait_until(lambda: workers.worker("g1w1")["pid"] != before["pid"] and workers.worker("g1w1")["state"] == "ready",
                   10, message="w1 restarted by fleet")
        # ...and the restarted worker is back in the proxy's rotation.
        wait_until(lambda: worker_of(get(port)[2]) == "g1w1", 15, interval=0.1, message=f"{kind} using w1 again")


def _https(port: int, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _raw_get(port: int, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize("kind", SERVERS)
def test_proxy_serves_https_with_hsts_and_redirects_plain_http(
        kind: str, workers: Fleet, tmp_path: Path, certificate: tuple[str, str]) -> None:
    port, redirect_port = free_port(), free_port()
    cert, key = certificate
    config = fleet_config(workers, port, ssl_certfile=cert, ssl_keyfile=key,
                          https_redirect_port=str(redirect_port), hsts="600")
    with running(kind, tmp_path, config):
        wait_until(lambda: port_open(redirect_port), 5, message="the redirect listener")
        status, headers, body = _https(port)
        assert status == 200 and body.startswith(b"hello from g1w")
        assert {k.lower(): v for k, v in headers.items()}["strict-transport-security"] == "max-age=600"

        redirect = _raw_get(redirect_port, "/slow?seconds=0")
        assert redirect.status == 301
        assert redirect.getheader("Location") == f"https://127.0.0.1:{port}/slow?seconds=0"

        ws = websocket.create_connection(f"wss://127.0.0.1:{port}/ws", timeout=5,
                                         sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False})
        try:
            ws.send("over tls")
            assert ws.recv().endswith(": over tls")
        finally:
            ws.close()


def _unix_get(path: str) -> tuple[int, bytes]:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(path)

    connection = UnixConnection("localhost")
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])  # Apache cannot listen on a unix socket
def test_proxy_also_listens_on_the_unix_socket(kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()
    sock = str(tmp_path / "fleet.sock")
    with running(kind, tmp_path, fleet_config(workers, port, unix_socket=sock)):
        status, body = _unix_get(sock)
        assert status == 200 and body.startswith(b"hello from g1w")
        assert get(port)[0] == 200


@pytest.mark.parametrize("kind", ["nginx", "apache"])  # HAProxy leaves /static/ to the workers
def test_proxy_serves_bokeh_static_files_itself(kind: str, workers: Fleet, tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    from bokeh.util.paths import static_path

    port = free_port()
    static = str(static_path())
    with running(kind, tmp_path, fleet_config(workers, port), bokeh_static_dir=static):
        status, headers, body = get(port, "/static/js/bokeh.min.js")
        assert status == 200
        assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/javascript")
        assert body == Path(static, "js", "bokeh.min.js").read_bytes()
        assert get(port)[0] == 200  # everything else still goes to the workers
        # Bokeh's runtime extensions are not on disk: /static/extensions/ is the workers' (a
        # tornado 404, not the server's own), unlike a missing file elsewhere under /static/.
        status, _, body = get(port, "/static/extensions/fleet-test/index.js")
        assert status == 404 and b"404: Not Found" in body, body
        status, _, body = get(port, "/static/js/fleet-test-missing.js")
        assert status == 404 and b"404: Not Found" not in body, body


@pytest.fixture(scope="module")
def bokeh_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two Bokeh workers; their --port is the proxies' port, so their allowed origin is the proxy's."""
    pytest.importorskip("bokeh")
    fleet = up(tmp_path_factory.mktemp("bokeh"), BOKEH_APP, workers=2)
    try:
        fleet.proc.wait_for_output(r"ready \(no proxy\)", timeout=90)
        yield fleet
    finally:
        fleet.proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVERS)
def test_bokeh_page_static_files_and_session_websocket_through_the_proxy(
        kind: str, bokeh_workers: Fleet, tmp_path: Path) -> None:
    from bokeh.util.paths import static_path

    port = bokeh_workers.port
    config = fleet_config(bokeh_workers, port, app=BOKEH_APP, workers="2")
    host = f"localhost:{port}"
    with running(kind, tmp_path, config, bokeh_static_dir=str(static_path())):
        status, _, body = get(port, "/bokeh_random", timeout=30, headers={"Host": host})
        assert status == 200, body[:500]
        page = body.decode()
        scripts = re.findall(r'src="(/static/js/bokeh[^"]*)"', page)
        assert scripts and all(get(port, src)[0] == 200 for src in scripts)
        token = re.search(r'"token":"([^"]+)"', page)
        assert token, page[:2000]
        # Bokeh's session token travels in Sec-WebSocket-Protocol, next to "bokeh".
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/bokeh_random/ws", timeout=20,
                                         subprotocols=["bokeh", token.group(1)],
                                         origin=f"http://{host}", host=host)
        try:
            assert ws.getsubprotocol() == "bokeh"
            assert json.loads(ws.recv())["msgtype"] == "ACK"
        finally:
            ws.close()


# -- every variant passes the servers' own checks ------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "tls": {"tls": True},
    "unix-socket": {"unix_socket": "fleet.sock"},
    "tls-and-unix-socket": {"tls": True, "unix_socket": "fleet.sock"},
    "upstream-list": {"upstream": ("10.0.0.5:5100", "10.0.0.5:5101", "10.0.0.6:5100", "[::1]:5100")},
    "bokeh-static": {"app": BOKEH_APP, "static": True},
    "xheaders-hosts-health-log": {
        "use_xheaders": True, "allow_host": ("example.com", "www.example.com:8443"),
        "health_path": "/healthz", "access_log": True, "no_sticky": True,
        "max_header_size": "128KiB", "max_body_size": "1GiB", "upstream_timeout": "90",
        "log_level": "debug", "address": "::1",
    },
}


def _check(kind: str, conf: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool(BINARIES[kind])
    args = {"nginx": ["-t", "-c"], "apache": ["-t", "-f"], "haproxy": ["-c", "-f"]}[kind]
    return subprocess.run([binary, *args, str(conf)], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def _assert_clean(kind: str, result: subprocess.CompletedProcess[str], text: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\n--- config ---\n{text}"
    for marker in ("[warn]", "[emerg]", "[WARNING]", "[ALERT]", "AH00"):
        assert marker not in output, f"{output}\n--- config ---\n{text}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", SERVERS)
def test_every_variant_passes_the_servers_own_check(
        kind: str, variant: str, tmp_path: Path, certificate: tuple[str, str]) -> None:
    options = dict(VARIANTS[variant])
    overrides: dict[str, Any] = {}
    if options.pop("tls", False):
        options["ssl_certfile"], options["ssl_keyfile"] = certificate
        options["https_redirect_port"] = str(free_port())
        options["hsts"] = "63072000"
    if options.pop("static", False):
        pytest.importorskip("bokeh")
        from bokeh.util.paths import static_path

        overrides["bokeh_static_dir"] = str(static_path())
    if "unix_socket" in options:
        options["unix_socket"] = str(tmp_path / options["unix_socket"])
    if options.pop("no_sticky", False):
        options["sticky"] = False
    config = fleet_config(None, free_port(), **options)
    state = tmp_path / "state"
    state.mkdir()
    text = render(kind, config, deployment(state, **overrides))
    conf = state / f"{kind}.conf"
    conf.write_text(text)
    _assert_clean(kind, _check(kind, conf), text)


@pytest.mark.parametrize("kind", SERVERS)
def test_fleet_config_command_output_passes_the_servers_own_check(kind: str, tmp_path: Path) -> None:
    """What a user gets from the CLI: system paths when root, else FLEET_STATE_DIR's."""
    conf = tmp_path / f"{kind}.conf"
    env = dict(os.environ)
    if not IS_ROOT:
        env["FLEET_STATE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "config", kind, BOKEH_APP, "-n", "3", "-o", str(conf)],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    if kind == "apache" and IS_ROOT:
        # Debian's apache2ctl creates /run/apache2, the system runtime directory, first.
        tool = require_tool("apache2ctl")
        check = subprocess.run([tool, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    else:
        check = _check(kind, conf)
    _assert_clean(kind, check, text)


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "fleet.service"
    result = run_cli("config", "systemd", TORNADO_APP, "-n", "3", "--graceful-timeout", "20", "-o", str(unit))
    assert result.returncode == 0, result.stderr
    check = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "TimeoutStopSec=35" in unit.read_text()
