"""What the proxy reads to answer an ACME challenge; the certificate manager writes it.

Files in the state directory's ``challenges/`` (``fleet.acme.paths``), so that every proxy
process (``--proxy-processes N``) answers the same way without a message from the master:

- HTTP-01: ``GET /.well-known/acme-challenge/<token>`` on the ``--https-redirect-port``
  listener is answered from ``http-01/<token>`` before the redirect rules, and never forwarded
  (nothing on that listener is); an unknown token is a 404.
- TLS-ALPN-01 (RFC 8737): a TLS client that offers ``acme-tls/1`` as its only protocol, for a
  name that has ``tls-alpn-01/<name>.pem``, gets that certificate instead of the real one. The
  offer is read from the ClientHello (``client_hello_alpn``), so an ordinary browser asking
  for the same name during a renewal still gets the real certificate.

Pure parsers plus small file readers; no ``acme`` library here (the proxy does not need it).
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

ACME_TLS = b"acme-tls/1"
CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
# Tokens are base64url (RFC 8555 8.3: at least 128 bits of entropy, 43 characters).
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{16,128}")
_REQUEST = re.compile(rb"(GET|HEAD) (\S+) HTTP/1\.[01]")
MAX_ANSWER = 1024  # a key authorization is token.thumbprint: well under this
_NAME = re.compile(r"[a-z0-9.-]{1,253}")


def http01_token(head: bytes) -> bytes | None:
    """The token a request head asks for, if it is an HTTP-01 challenge request (else None)."""
    line = head.split(b"\r\n", 1)[0]
    match = _REQUEST.fullmatch(line)
    if match is None:
        return None
    target = match.group(2)
    if target.startswith((b"http://", b"https://")):
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    if not target.startswith(CHALLENGE_PREFIX):
        return None
    token = target[len(CHALLENGE_PREFIX):]
    return token if _TOKEN.fullmatch(token) else b""


def http01_answer(head: bytes, directory: str | None) -> bytes | None:
    """The whole answer to a challenge request (200 with the key authorization, or 404), or None
    when ``head`` is not one (the redirect rules answer it)."""
    if directory is None:
        return None
    token = http01_token(head)
    if token is None:
        return None
    body = None
    if token:
        try:
            fd = os.open(os.path.join(directory, "http-01", token.decode("ascii")), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            body = None
        else:
            with os.fdopen(fd, "rb") as handle:
                body = handle.read(MAX_ANSWER)
    if body is None:
        return (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
                b"Connection: close\r\n\r\nnot found\n")
    head_only = head.startswith(b"HEAD ")
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + (b"" if head_only else body)


def client_hello_alpn(message: bytes) -> tuple[bytes, ...]:
    """The protocols a TLS ClientHello handshake message offers in its ALPN extension (RFC 7301),
    in order; () when it has none or is malformed. ``message`` starts at the handshake header."""
    try:
        if message[0] != 1:
            return ()
        at = 4 + 2 + 32  # handshake header, legacy_version, random
        at += 1 + message[at]  # session id
        at += 2 + int.from_bytes(message[at:at + 2], "big")  # cipher suites
        at += 1 + message[at]  # compression methods
        end = at + 2 + int.from_bytes(message[at:at + 2], "big")
        if end > len(message):
            return ()
        at += 2
        while at + 4 <= end:
            kind = int.from_bytes(message[at:at + 2], "big")
            size = int.from_bytes(message[at + 2:at + 4], "big")
            body = message[at + 4:at + 4 + size]
            at += 4 + size
            if kind != 16:
                continue
            names, offset, stop = [], 2, 2 + int.from_bytes(body[:2], "big")
            while offset < min(stop, len(body)):
                length = body[offset]
                names.append(bytes(body[offset + 1:offset + 1 + length]))
                offset += 1 + length
            return tuple(names)
    except IndexError:
        return ()
    return ()


class AlpnChallenges:
    """The TLS-ALPN-01 certificates being validated, as SSL contexts (read again when the file
    changes; a name with no file has none)."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.join(directory, "tls-alpn-01")
        self._cache: dict[str, tuple[tuple[int, int], ssl.SSLContext]] = {}

    def context_for(self, name: str) -> ssl.SSLContext | None:
        if not _NAME.fullmatch(name):
            return None
        path = os.path.join(self.directory, name + ".pem")
        try:
            info = os.stat(path)
        except OSError:
            self._cache.pop(name, None)
            return None
        stamp = (info.st_mtime_ns, info.st_size)
        known = self._cache.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(path)
        except (OSError, ssl.SSLError):
            return None
        context.set_alpn_protocols([ACME_TLS.decode()])
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[name] = (stamp, context)
        return context


def remember_alpn_offer(conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any,
                        data: bytes) -> None:
    """An ``SSLContext._msg_callback``: keeps the ALPN offer of a ClientHello on the connection
    for the SNI callback, which runs next (OpenSSL shows the SNI callback no ALPN offer)."""
    if direction == "read" and int(content_type) == 22 and int(msg_type) == 1:
        try:
            conn.fleet_alpn_offer = client_hello_alpn(data)
        except AttributeError:
            pass


__all__ = ["ACME_TLS", "AlpnChallenges", "client_hello_alpn", "http01_answer", "http01_token",
           "remember_alpn_offer"]
