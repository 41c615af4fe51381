"""The servers bench/pageload.py compares, each started in the server namespace on its own port.

- ``bokeh``: ``bokeh serve APP --num-procs 1``, what a user starts with.
- ``nginx``: the seed setup, Bokeh's deployment guide as written: N ``bokeh serve`` workers and
  nginx ``upstream { least_conn; }`` with the WebSocket upgrade headers, everything (BokehJS
  too) proxied to the workers. nginx is a child of the bench, with its own prefix and config.
- ``fleet``, ``fleet-tls``: ``fleet up APP -n N`` over HTTP/1.1, plain and TLS (Chromium told
  not to use HTTP/2, so the row stays HTTP/1.1 whatever the build offers).
- ``fleet-h2``: ``fleet up`` over TLS with Chromium free to pick HTTP/2; a build whose TLS port
  does not offer ALPN ``h2`` gets "not available in this build" instead of a row.

Every server is probed through the shaped link first: is it up, which Content-Encoding it gives
``bokeh.min.js`` when asked for ``gzip, br, zstd``, and (TLS) whether it offers h2.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pageload_net import SERVER_ADDRESS, Link

APP = Path(__file__).resolve().parent / "pageload_app"
SERVERS = ("bokeh", "nginx", "fleet", "fleet-tls", "fleet-h2")
NOT_AVAILABLE = "not available in this build"
READY_TIMEOUT = 120.0  # a fleet of Bokeh workers starting on a loaded 2-core machine
STOP_TIMEOUT = 20.0
JS_PATH = "/static/js/bokeh.min.js"
ASK_COMPRESSED = "Accept-Encoding: gzip, deflate, br, zstd"


@dataclass(frozen=True)
class Running:
    """A started server: where Chromium goes, with which flags, and what the probes saw."""

    name: str
    url: str
    flags: tuple[str, ...]
    js_encoding: str
    offers_h2: bool


def seed_nginx_conf(prefix: Path, port: int, worker_ports: list[int], address: str = SERVER_ADDRESS) -> str:
    """Bokeh's deployment guide's nginx file in Debian's stock http block (whose ``gzip on``
    covers only text/html), with paths under ``prefix`` so it runs as the bench's child."""
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in worker_ports)
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes auto;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'};
events {{
    worker_connections 768;
}}
http {{
    sendfile on;
    tcp_nopush on;
    gzip on;
    access_log off;
{temp}
    upstream myapp {{
        least_conn;
{servers}
    }}
    server {{
        listen {address}:{port} default_server;
        server_name _;
        location / {{
            proxy_pass http://myapp;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_http_version 1.1;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Host $host:$server_port;
            proxy_buffering off;
        }}
    }}
}}
"""


def self_signed(directory: Path) -> tuple[Path, Path, str]:
    """A certificate for the server address, and its SPKI hash: Chromium trusts it through
    ``--ignore-certificate-errors-spki-list``, which (unlike ``--ignore-certificate-errors``)
    counts the certificate as valid, so HTTPS responses are cached as on a real site."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={SERVER_ADDRESS}",
                    "-addext", f"subjectAltName=IP:{SERVER_ADDRESS}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    public = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"], check=True,
                            capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=public, check=True,
                         capture_output=True, timeout=30).stdout
    return cert, key, base64.b64encode(hashlib.sha256(der).digest()).decode()


class Servers:
    """Starts one server at a time in the link's server namespace; each gets its own ports."""

    def __init__(self, link: Link, workdir: Path, workers: int, fleet_args: tuple[str, ...] = (),
                 app: Path = APP) -> None:
        self.link = link
        self.app = app.resolve()
        self.workdir = workdir
        self.workers = workers
        self.fleet_args = fleet_args
        self.slot = 0
        self.procs: dict[subprocess.Popen[bytes], str] = {}  # running ones, by label

    @contextmanager
    def running(self, name: str) -> Iterator[Running | str]:
        """The started server, or why it cannot run in this build (a sentence)."""
        self.slot += 1
        port, base = 8000 + self.slot, 5000 + 100 * self.slot
        directory = self.workdir / name
        directory.mkdir(parents=True)
        with ExitStack() as stack:
            scheme, flags = "http", ()
            if name == "bokeh":
                stack.enter_context(self.process(directory, "bokeh", self.bokeh_serve(port, port)))
            elif name == "nginx":
                ports = [base + i for i in range(self.workers)]
                for i, worker in enumerate(ports):
                    stack.enter_context(self.process(directory, f"bokeh-{i}", self.bokeh_serve(worker, port)))
                (directory / "nginx.conf").write_text(seed_nginx_conf(directory, port, ports))
                stack.enter_context(self.process(directory, "nginx", [
                    "nginx", "-p", str(directory), "-e", str(directory / "error.log"),
                    "-c", str(directory / "nginx.conf")]))
            else:
                argv = [sys.executable, "-m", "fleet", "up", str(self.app), "-n", str(self.workers),
                        "--address", SERVER_ADDRESS, "--port", str(port), "--base-port", str(base),
                        "--control-socket", str(directory / "fleet.sock"), *self.fleet_args]
                if name != "fleet":
                    cert, key, spki = self_signed(directory)
                    argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
                    scheme, flags = "https", (f"--ignore-certificate-errors-spki-list={spki}",)
                    if name == "fleet-tls":
                        flags += ("--disable-http2",)
                stack.enter_context(self.process(directory, "fleet", argv))
            origin = f"{scheme}://{SERVER_ADDRESS}:{port}"
            url = f"{origin}/{self.app.name}"
            self.wait_ready(url, directory)
            offers_h2 = scheme == "https" and self.curl("--http2", "-w", "%{http_version}", url) == "2"
            if name == "fleet-h2" and not offers_h2:
                yield f"{NOT_AVAILABLE} (its TLS port offers no ALPN h2)"
                return
            encoding = self.curl("-H", ASK_COMPRESSED, "-w", "%header{content-encoding}",
                                 origin + JS_PATH) or "identity"
            yield Running(name, url, flags, encoding, offers_h2)

    def bokeh_serve(self, port: int, public_port: int) -> list[str]:
        return [sys.executable, "-m", "bokeh", "serve", str(self.app), "--port", str(port), "--num-procs", "1",
                "--address", SERVER_ADDRESS if port == public_port else "127.0.0.1",
                "--allow-websocket-origin", f"{SERVER_ADDRESS}:{public_port}"]

    @contextmanager
    def process(self, directory: Path, label: str, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
        """A server process in the server namespace, in its own session, stopped on exit: SIGTERM,
        then SIGKILL to its session (only the processes it started) if it is not gone in time."""
        with open(directory / f"{label}.log", "wb") as log:
            proc = subprocess.Popen(self.link.in_server(argv), cwd=directory, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[proc] = label
        try:
            yield proc
        finally:
            del self.procs[proc]
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
            try:  # workers a server left behind share its session
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def curl(self, *args: str) -> str:
        """One request from the client namespace (through the shaped link); what ``-w`` printed."""
        done = subprocess.run(self.link.in_client(["curl", "-sk", "-o", "/dev/null", "--max-time", "10", *args]),
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip()

    def wait_ready(self, url: str, directory: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while self.curl("-w", "%{http_code}", url) != "200":
            dead = [label for proc, label in self.procs.items() if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-2000:]
                                 for log in sorted(directory.glob("*.log")))
                why = f"{dead[0]} exited" if dead else f"not ready within {READY_TIMEOUT:.0f} s"
                raise RuntimeError(f"{url}: {why}\n{logs}")
            time.sleep(0.25)
