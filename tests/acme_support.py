"""A real ACME CA on loopback for the automatic-HTTPS tests: Debian's ``pebble``, with
``pebble-challtestsrv`` as its DNS server (every name -> 127.0.0.1).

``Pebble`` writes pebble's config (its HTTP-01 and TLS-ALPN-01 ports are fleet's
``--https-redirect-port`` and ``--port``), makes the certificate pebble's own HTTPS serves
(and the CA file fleet is given with ``--acme-ca-root``), starts both processes on free ports
and ends them by pid. ``root()`` is pebble's issuing root, from its management endpoint.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support import free_port, kill_group, port_open, require_tool, wait_until


def _listener_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1/localhost signed by it: pebble's own HTTPS."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test pebble listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "listener-ca.pem", directory / "listener.pem", directory / "listener.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class Pebble:
    def __init__(self, directory: Path, http_port: int, tls_port: int, *, validity: int | None = None,
                 blocklist: tuple[str, ...] = (), always_valid: bool = False, port: int | None = None) -> None:
        require_tool("pebble")
        require_tool("pebble-challtestsrv")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file, cert, key = _listener_certificate(directory)
        self.port, self.management, self.dns = port or free_port(), free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "domainBlocklist": list(blocklist),
        }}
        if validity is not None:
            config["pebble"]["certificateValidityPeriod"] = validity
        (directory / "pebble.json").write_text(json.dumps(config))
        self.env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        if always_valid:
            self.env["PEBBLE_VA_ALWAYS_VALID"] = "1"
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def _spawn(self, args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=self.env, cwd=self.directory, start_new_session=True, text=True, bufsize=1)
        self.procs.append(proc)

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        return proc

    def start(self) -> "Pebble":
        dns_management = free_port()
        self._spawn(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                     "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                     "-management", f"127.0.0.1:{dns_management}"])
        # Its DNS (UDP) and management (TCP) servers start together: the TCP one is what can be seen.
        wait_until(lambda: port_open(dns_management), 10, message="pebble-challtestsrv listening")
        self._spawn(["pebble", "-config", str(self.directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns}"])
        wait_until(lambda: port_open(self.port) and port_open(self.management), 20, message="pebble listening")
        return self

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def issued(self) -> int:
        """Certificates pebble issued (its log says so once per finalised order)."""
        return len(re.findall(r"Issued certificate", self.output()))

    def root(self) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management}/roots/0", context=context,
                                    timeout=10) as answer:
            return answer.read()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc.pid)
            proc.wait(timeout=10)

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def https_get(port: int, name: str, root_pem: bytes, path: str = "/", timeout: float = 10.0) -> tuple[bytes, bytes]:
    """GET https://name:port/path from 127.0.0.1, verifying the certificate against ``root_pem``:
    (the server's certificate in DER, the answer)."""
    context = ssl.create_default_context(cadata=root_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}:{port}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    assert der is not None
    return der, b"".join(chunks)
