"""Automatic HTTPS against a real ACME CA on loopback (Debian's pebble): ``fleet up --domain``
from nothing to a page over TLS that chains to pebble's root, with HTTP-01 and with TLS-ALPN-01
only; renewal under wrk load with open WebSockets; a restart that reuses the stored certificate;
a CA that refuses; a state directory others may read. Real processes and sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from acme_support import Pebble, https_get
from support import FRESH_METRICS, free_port, http_get, kill_group, require_tool, start_fleet, wait_until
from up_helpers import request

APP = str(Path(__file__).parent / "apps" / "backend.py")
DOMAIN = "dash.test"
pytestmark = pytest.mark.slow


class AcmeFleet:
    """``fleet up --domain dash.test`` against ``pebble``, on free ports, ended by the test."""

    def __init__(self, tmp: Path, pebble: Pebble, tls_port: int, http_port: int | None, *extra: str,
                 state: Path | None = None) -> None:
        self.tmp = tmp
        self.port = tls_port
        self.http_port = http_port
        self.metrics = free_port()
        self.control = str(tmp / "fleet.sock")
        self.state = state or tmp / "state"
        redirect = ["--https-redirect-port", str(http_port)] if http_port else []
        self.proc = start_fleet(
            "up", APP, "-n", "1", "--port", str(tls_port), *redirect, "--base-port", str(free_port()),
            "--surge-base-port", str(free_port()), "--control-socket", self.control,
            "--metrics-port", str(self.metrics), "--domain", DOMAIN, "--acme-directory", pebble.url,
            "--acme-ca-root", str(pebble.ca_file), "--acme-state", str(self.state), *extra,
            env={**FRESH_METRICS, "FLEET_ACME_RETRY_BASE": "1"}, cwd=str(tmp))

    def status(self) -> dict:
        return request(self.control, "status")["acme"]

    def metric(self, name: str) -> float | None:
        _, _, body = http_get(f"http://127.0.0.1:{self.metrics}/metrics")
        match = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
        return float(match.group(1)) if match else None

    def stop(self) -> None:
        self.proc.stop()


def plain_get(port: int, path: str) -> bytes:
    """The answer of the plain-HTTP listener, as sent (urllib would follow the redirect)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def served_serial(port: int, root: bytes) -> int:
    der, answer = https_get(port, DOMAIN, root)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return serial(der)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.mark.parametrize("processes", [1, 2])
def test_from_nothing_to_https_with_http01(tmp_path: Path, ports: tuple[int, int], processes: int) -> None:
    tls_port, http_port = ports
    with Pebble(tmp_path / "pebble", http_port, tls_port) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, http_port, "--proxy-processes", str(processes))
        try:
            fleet.proc.wait_for_output(r"certificate for dash\.test obtained \(http-01\)", 90)
            fleet.proc.wait_for_output(r"TLS certificate reloaded", 20)
            root = pebble.root()
            der, answer = wait_until(lambda: https_get(tls_port, DOMAIN, root), 20, message="a page over TLS")
            assert answer.startswith(b"HTTP/1.1 200") and b"hello from" in answer
            assert DOMAIN in [n.value for n in x509.load_der_x509_certificate(der).extensions
                              .get_extension_for_class(x509.SubjectAlternativeName).value]
            # Plain HTTP still redirects; the token path is answered there, never forwarded.
            answer = plain_get(http_port, "/x")
            assert answer.startswith(b"HTTP/1.1 301") and f"Location: https://{DOMAIN}:{tls_port}/x".encode() in answer
            assert plain_get(http_port, "/.well-known/acme-challenge/0123456789abcdefABCDEF_-xyz").startswith(
                b"HTTP/1.1 404")
            assert fleet.status()["state"] == "valid"
            assert fleet.metric('fleet_acme_orders_total{result="valid"}') == 1
            expiry = fleet.metric('fleet_certificate_expiry_timestamp_seconds{domain="dash.test"}')
            assert expiry is not None and expiry > time.time()
            # The state directory: 0700 directories, 0600 files; no challenge left behind.
            for where, dirs, files in os.walk(fleet.state):
                assert stat.S_IMODE(os.stat(where).st_mode) == 0o700, where
                for name in files:
                    assert stat.S_IMODE(os.stat(os.path.join(where, name)).st_mode) == 0o600, name
            assert not list((fleet.state / "challenges").rglob("*.pem"))
            assert not [p for p in (fleet.state / "challenges").rglob("*") if p.is_file()]
        finally:
            fleet.stop()


def test_from_nothing_to_https_with_tls_alpn01_only(tmp_path: Path, ports: tuple[int, int]) -> None:
    tls_port, _ = ports
    with Pebble(tmp_path / "pebble", free_port(), tls_port) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, None)
        try:
            fleet.proc.wait_for_output(r"certificate for dash\.test obtained \(tls-alpn-01\)", 90)
            root = pebble.root()
            _, answer = wait_until(lambda: https_get(tls_port, DOMAIN, root), 20, message="a page over TLS")
            assert b"hello from" in answer
            assert "Attempting to validate w/ HTTP" not in pebble.output()
            # A validation under way for the name: only a client offering acme-tls/1 alone gets
            # the challenge certificate; a browser asking for the same name gets the real one.
            from fleet.acme.client import alpn_certificate
            from fleet.acme.store import write_private

            write_private(str(fleet.state / "challenges" / "tls-alpn-01" / f"{DOMAIN}.pem"),
                          alpn_certificate(DOMAIN, "token.thumbprint"))
            validator = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            validator.check_hostname, validator.verify_mode = False, ssl.CERT_NONE
            validator.set_alpn_protocols(["acme-tls/1"])
            with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
                with validator.wrap_socket(raw, server_hostname=DOMAIN) as tls:
                    assert tls.selected_alpn_protocol() == "acme-tls/1"
                    challenge = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            assert challenge.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")).critical
            _, answer = https_get(tls_port, DOMAIN, root)  # verified against pebble's root
            assert b"hello from" in answer
        finally:
            fleet.stop()


def test_restart_reuses_the_stored_certificate_without_an_order(tmp_path: Path, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    with Pebble(tmp_path / "pebble", http_port, tls_port) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, http_port)
        try:
            fleet.proc.wait_for_output(r"certificate for dash\.test obtained", 90)
            root = pebble.root()
            first = wait_until(lambda: served_serial(tls_port, root), 20, message="a page over TLS")
        finally:
            fleet.stop()
        orders = pebble.output().count("/order-plz")
        assert pebble.issued() == 1
        fleet = AcmeFleet(tmp_path, pebble, tls_port, http_port)
        try:
            fleet.proc.wait_for_output(r"using the stored certificate for dash\.test", 30)
            fleet.proc.wait_for_output(r"ready: open", 60)
            assert wait_until(lambda: served_serial(tls_port, root), 20, message="a page over TLS") == first
            assert fleet.metric('fleet_acme_orders_total{result="reused"}') == 1
            assert fleet.metric('fleet_acme_orders_total{result="valid"}') == 0
        finally:
            fleet.stop()
        assert pebble.output().count("/order-plz") == orders and pebble.issued() == 1


def test_a_refusing_ca_is_reported_retried_and_plain_http_serves_on(tmp_path: Path, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    with Pebble(tmp_path / "pebble", http_port, tls_port, blocklist=(DOMAIN,)) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, http_port)
        try:
            fleet.proc.wait_for_output(r"order for dash\.test failed \(2 in a row\)", 90)
            fleet.proc.wait_for_output(r"ready: open", 60)
            out = fleet.proc.output()
            assert "rejectedIdentifier" in out  # the CA's own problem document, in the log
            assert re.search(r"next try in \d+ s", out)
            # Between two tries (the next one may be under way: poll for the failed state).
            status = wait_until(lambda: (lambda st: st if st["state"] == "failed" else None)(fleet.status()), 20,
                                message="the failed state in fleet status")
            assert status["failures"] >= 2
            assert "rejectedIdentifier" in str(status["problem"]["type"])
            assert fleet.metric('fleet_acme_orders_total{result="refused"}') >= 2
            assert fleet.metric('fleet_certificate_expiry_timestamp_seconds{domain="dash.test"}') is None
            # No certificate: TLS handshakes are refused, with a line saying why; HTTP serves on.
            with pytest.raises(ssl.SSLError):
                https_get(tls_port, DOMAIN, pebble.root())
            fleet.proc.wait_for_output(r"TLS handshake refused .*no certificate yet for dash\.test", 20)
            assert plain_get(http_port, "/").startswith(b"HTTP/1.1 301")
        finally:
            fleet.stop()


def test_a_refused_renewal_keeps_the_certificate_it_had(tmp_path: Path, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    pebble_port = free_port()
    with Pebble(tmp_path / "pebble", http_port, tls_port, validity=30, port=pebble_port) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, http_port)
        try:
            fleet.proc.wait_for_output(r"certificate for dash\.test obtained", 90)
            root = pebble.root()
            first = wait_until(lambda: served_serial(tls_port, root), 20, message="a page over TLS")
        except BaseException:
            fleet.stop()
            raise
    try:  # the same CA address, now refusing the name
        with Pebble(tmp_path / "pebble2", http_port, tls_port, validity=30, port=pebble_port,
                    blocklist=(DOMAIN,)):
            fleet.proc.wait_for_output(r"order for dash\.test failed \(1 in a row\).*current certificate serves on",
                                       60)
            assert served_serial(tls_port, root) == first
            assert fleet.status()["state"] == "renew failed"
    finally:
        fleet.stop()


def test_a_state_directory_others_may_read_is_refused(tmp_path: Path, ports: tuple[int, int]) -> None:
    tls_port, http_port = ports
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    fleet = start_fleet("up", APP, "-n", "1", "--port", str(tls_port), "--https-redirect-port", str(http_port),
                        "--base-port", str(free_port()), "--control-socket", str(tmp_path / "f.sock"),
                        "--domain", DOMAIN, "--acme-directory", "https://127.0.0.1:1/dir",
                        "--acme-state", str(state), cwd=str(tmp_path))
    try:
        assert fleet.wait(30) == 1
        assert "mode 0755" in fleet.output() and f"chmod 0700 {state}" in fleet.output()
    finally:
        fleet.stop()
    os.chmod(state, 0o700)
    key = state / "accounts" / "x" / "account-key.pem"
    for directory in (key.parent.parent, key.parent):
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)
    key.write_text("secret")
    os.chmod(key, 0o644)
    fleet = start_fleet("up", APP, "-n", "1", "--port", str(tls_port), "--base-port", str(free_port()),
                        "--control-socket", str(tmp_path / "f.sock"), "--domain", DOMAIN,
                        "--acme-directory", "https://127.0.0.1:1/dir", "--acme-state", str(state), cwd=str(tmp_path))
    try:
        assert fleet.wait(30) == 1
        assert f"chmod 0600 {key}" in fleet.output()
    finally:
        fleet.stop()


def test_renewal_under_load_drops_nothing_and_new_connections_see_the_new_certificate(
        tmp_path: Path, ports: tuple[int, int]) -> None:
    """Certificates of 24 s: fleet renews at about 16 s, by TLS-ALPN-01 on the port wrk keeps
    busy (an ordinary client's handshake still gets the real certificate)."""
    import websocket

    wrk = require_tool("wrk")
    tls_port, _ = ports
    with Pebble(tmp_path / "pebble", free_port(), tls_port, validity=24) as pebble:
        fleet = AcmeFleet(tmp_path, pebble, tls_port, None)
        sockets: list[websocket.WebSocket] = []
        try:
            fleet.proc.wait_for_output(r"certificate for dash\.test obtained", 90)
            fleet.proc.wait_for_output(r"ready: open", 60)
            root = pebble.root()
            first = wait_until(lambda: served_serial(tls_port, root), 20, message="a page over TLS")
            for _ in range(3):
                sockets.append(websocket.create_connection(
                    f"wss://127.0.0.1:{tls_port}/ws", timeout=10, suppress_origin=True,
                    sslopt={"cert_reqs": ssl.CERT_NONE, "server_hostname": DOMAIN}))
            # Connection: close: every request is a new TLS handshake, during the challenge too.
            load = subprocess.Popen([wrk, "-t2", "-c16", "-d24s", "-H", "Connection: close",
                                     f"https://127.0.0.1:{tls_port}/"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            failures: list[BaseException] = []
            checked = [0]
            done = threading.Event()

            def verify_continuously() -> None:  # new handshakes for dash.test, verified, all along
                while not done.is_set():
                    try:
                        served_serial(tls_port, root)
                        checked[0] += 1
                    except BaseException as exc:  # noqa: BLE001 - every failure is counted
                        failures.append(exc)

            checker = threading.Thread(target=verify_continuously, daemon=True)
            checker.start()
            try:
                wait_until(lambda: len(re.findall(r"certificate for dash\.test obtained", fleet.proc.output())) >= 2,
                           40, message="the renewal")
                wait_until(lambda: served_serial(tls_port, root) != first, 10, message="the new certificate served")
                for number, ws in enumerate(sockets):  # open across the renewal, and still echoing
                    ws.send(f"after {number}")
                    assert ws.recv().endswith(f": after {number}")
                report, _ = load.communicate(timeout=60)
            finally:
                done.set()
                checker.join(timeout=30)
                if load.poll() is None:
                    kill_group(load.pid)
                    load.wait(timeout=10)
            assert not failures and checked[0] > 10, (failures[:3], checked)
            assert load.returncode == 0, report
            assert "Socket errors" not in report and "Non-2xx" not in report, report
            requests = int(re.search(r"(\d+) requests in", report).group(1))
            assert requests > 100, report
            assert fleet.metric('fleet_acme_orders_total{result="valid"}') >= 2
        finally:
            for ws in sockets:
                ws.close()
            fleet.stop()


def test_two_fleets_sharing_a_state_directory_order_once(tmp_path: Path, ports: tuple[int, int]) -> None:
    """The CA validates at the first fleet's ports; whichever fleet orders, the other takes the
    certificate from the shared directory (the order lock), and the CA issues one."""
    tls_port, http_port = ports
    state = tmp_path / "shared-state"
    with Pebble(tmp_path / "pebble", http_port, tls_port) as pebble:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = AcmeFleet(tmp_path / "a", pebble, tls_port, http_port, state=state)
        other_port = free_port()
        second = AcmeFleet(tmp_path / "b", pebble, other_port, free_port(), state=state)
        try:
            for fleet in (first, second):
                fleet.proc.wait_for_output(r"certificate for dash\.test (obtained|taken from the state directory)", 90)
            root = pebble.root()
            serials = {wait_until(lambda port=port: served_serial(port, root), 20, message="a page over TLS")
                       for port in (tls_port, other_port)}
            assert len(serials) == 1
            assert pebble.issued() == 1
            assert "taken from the state directory" in first.proc.output() + second.proc.output()
        finally:
            first.stop()
            second.stop()
