"""TLS extras and secrets on real sockets: certificate reload
without dropping connections, the HTTP->HTTPS redirect listener, HSTS, a Secure and opaque
affinity cookie, and TLS passwords that never reach a worker, argv or a generated config."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import websocket

from support import free_port, free_port_range, require_tool, start_fleet
from test_balancer import BACKEND, raw, status_of
from up_helpers import Fleet, balance, run_cli, workers_without_proxy

PASSWORD = "s3cret-Pw-7d1f"


def make_cert(directory: Path, name: str, password: str | None = None) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    secret = ["-passout", f"pass:{password}"] if password else ["-nodes"]
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    *secret, "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def served_certificate(port: int) -> str:
    """The certificate a new TLS handshake gets now (PEM)."""
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=10)


def same_cert(pem_file: Path, served: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text()) == ssl.PEM_cert_to_DER_cert(served)


def insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("backends"), BACKEND) as started:
        yield started


def test_sighup_reloads_the_certificate_and_open_connections_carry_on(backends: Fleet, tmp_path: Path) -> None:
    alpha, alpha_key = make_cert(tmp_path, "alpha")
    beta, beta_key = make_cert(tmp_path, "beta")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(alpha, cert)
    shutil.copy(alpha_key, key)
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                         "--hsts", "600")
    with proc:
        assert same_cert(alpha, served_certificate(port))
        sock = websocket.create_connection(f"wss://127.0.0.1:{port}/ws", timeout=10,
                                           sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False})
        keep_alive = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=insecure())
        keep_alive.request("GET", "/")
        response = keep_alive.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Strict-Transport-Security") == "max-age=600"
        # opaque id, and Secure because the proxy serves TLS
        assert response.getheader("Set-Cookie") == "fleet_affinity=b0; Path=/; HttpOnly; SameSite=Lax; Secure"

        shutil.copy(beta, cert)
        shutil.copy(beta_key, key)
        proc.signal(signal.SIGHUP)
        proc.wait_for_output(r"TLS certificate reloaded", timeout=10)
        assert same_cert(beta, served_certificate(port))
        sock.send("still here")
        assert sock.recv().endswith(": still here")
        keep_alive.request("GET", "/")
        assert keep_alive.getresponse().read().startswith(b"hello from")

        cert.write_text("not a certificate\n")
        proc.signal(signal.SIGHUP)
        proc.wait_for_output(r"TLS certificate NOT reloaded, the previous one stays in use", timeout=10)
        assert same_cert(beta, served_certificate(port))
        sock.close()
        keep_alive.close()


def test_https_redirect_listener_redirects_allowed_hosts_only(backends: Fleet, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "localhost")
    redirect = free_port()
    proc, port = balance(f"127.0.0.1:{backends.base_port}", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                         "--https-redirect-port", str(redirect), "--allow-host", "app.test:*", "--hsts", "60",
                         "--access-log")
    with proc:
        proc.wait_for_output(rf"http://127\.0\.0\.1:{redirect} redirects to https", timeout=10)
        answer = raw(redirect, b"GET /a/b?c=1 HTTP/1.1\r\nHost: App.Test:80\r\n\r\n")
        assert status_of(answer) == 301
        assert f"\r\nLocation: https://app.test:{port}/a/b?c=1\r\n".encode() in answer
        assert b"Strict-Transport-Security" not in answer  # HSTS only over TLS
        posted = raw(redirect, b"POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc")
        assert status_of(posted) == 308 and f"Location: https://app.test:{port}/form".encode() in posted
        assert status_of(raw(redirect, b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")) == 421
        assert status_of(raw(redirect, b"GET http://evil.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n")) == 421
        assert status_of(raw(redirect, b"GET / HTTP/1.0\r\n\r\n")) == 400
        assert status_of(raw(redirect, b"GET / HTTP/1.1\r\nHost: app.test\r\nX: " + b"a" * 70000)) == 431
        assert status_of(raw(redirect, b"GET /\r\n\r\n")) == 400
    assert '"GET' not in proc.output()  # nothing went to a worker


def test_tls_options_without_tls_are_refused(tmp_path: Path) -> None:
    for options, message in ((["--hsts", "60"], "--hsts needs TLS"),
                             (["--https-redirect-port", "8080"], "--https-redirect-port needs TLS")):
        result = run_cli("balance", "127.0.0.1:1", "--port", str(free_port()), *options)
        assert result.returncode != 0 and message in result.stderr + result.stdout


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.slow
def test_tls_passwords_never_reach_workers_argv_or_generated_configs(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "localhost", password=PASSWORD)
    # Bokeh's name for the password is accepted alone.
    env = {**os.environ, "BOKEH_SSL_PASSWORD": PASSWORD, "FLEET_LOG_LEVEL": "info"}
    env.pop("FLEET_SSL_PASSWORD", None)
    base, port = free_port_range(2), free_port()
    control = str(tmp_path / "fleet.sock")
    proc = start_fleet("up", BACKEND, "-n", "2", "--base-port", str(base), "--port", str(port),
                       "--control-socket", control, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                       env=env, cwd=str(tmp_path))
    with proc:
        proc.wait_for_output(r"ready: open https://", timeout=60)
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=insecure())
        connection.request("GET", "/")
        assert connection.getresponse().read().startswith(b"hello from g1w")
        connection.close()
        workers = [child for child in psutil.Process(proc.pid).children(recursive=True)
                   if "fleet.worker" in " ".join(child.cmdline())]
        assert len(workers) == 2
        for worker in workers:
            environ = _environ(worker.pid)
            assert PASSWORD.encode() not in environ
            assert b"BOKEH_SSL_PASSWORD=" not in environ and b"FLEET_LOG_LEVEL=" not in environ
            assert b"FLEET_WORKER_ID=g1w" in environ
            assert PASSWORD not in " ".join(worker.cmdline())
        assert PASSWORD not in " ".join(psutil.Process(proc.pid).cmdline())
        # a rotated (encrypted) certificate is picked up by `fleet reload`
        rotated, rotated_key = make_cert(tmp_path, "rotated", password=PASSWORD)
        shutil.copy(rotated, cert)
        shutil.copy(rotated_key, key)
        result = run_cli("reload", "--control-socket", control, timeout=120)
        assert result.returncode == 0, result.stderr
        proc.wait_for_output(r"TLS certificate reloaded", timeout=10)
        assert same_cert(rotated, served_certificate(port))

    for kind in ("nginx", "apache", "haproxy", "systemd"):
        generated = run_config(kind, cert, key, tmp_path)
        assert generated.returncode == 0, generated.stderr
        assert PASSWORD not in generated.stdout + generated.stderr
        assert re.search(r"Generated by", generated.stdout) or kind == "systemd"


def run_config(kind: str, cert: Path, key: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet", "config", kind, BACKEND, "-n", "2",
                           "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
                          capture_output=True, text=True, timeout=60, cwd=str(cwd), stdin=subprocess.DEVNULL,
                          env={**os.environ, "FLEET_SSL_PASSWORD": PASSWORD})
