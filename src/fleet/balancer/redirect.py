"""``--https-redirect-port``: a plain-HTTP listener that only sends clients to HTTPS.

Like nginx's ``return 301 https://$host$request_uri`` server: GET and HEAD get a ``301``, other
methods a ``308`` (so a POST stays a POST), to ``https://<Host's name>[:--port]<target>``. The
redirect goes only to a name the proxy would accept (``--allow-host``, Bokeh's rules), so the
listener cannot be used to bounce browsers to a foreign site; anything else gets a 400/421.
Nothing is ever forwarded to a worker. Each connection answers one request and closes; a head
larger than ``--max-header-size`` or slower than ``--header-timeout`` ends it.

``redirect_answer`` is pure (bytes of a head in, bytes of an answer out); ``RedirectConnection``
is the thin asyncio shell around it. With ``--domain``, ACME HTTP-01 challenge requests are
answered first, from the state directory (``fleet.acme.answers.http01_answer``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fleet.acme.answers import http01_answer
from fleet.balancer.allow import Allowlist
from fleet.balancer.head import HeadError, error_response, split_absolute_target
from fleet.balancer.request_rules import _VALID_HOST

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/1\.[01]")


def _hostname(host: bytes) -> bytes:
    """``Name:8080`` -> ``name``; ``[::1]:80`` -> ``[::1]``."""
    host = host.lower()
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.split(b":", 1)[0]


def redirect_answer(head: bytes, https_port: int, allowed: Allowlist) -> bytes:
    """The whole answer to one request head (without its final CRLF CRLF)."""
    try:
        lines = head.split(b"\r\n")
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None:
            raise HeadError(400, "malformed", "malformed request line")
        method, target = match.group(1), match.group(2)
        hosts = [line.split(b":", 1)[1].strip() for line in lines[1:]
                 if line[:5].lower() == b"host:"]
        if len(hosts) != 1 or not hosts[0] or not _VALID_HOST.fullmatch(hosts[0]):
            raise HeadError(400, "bad_host", "exactly one valid Host header is needed")
        host = hosts[0]
        if target.startswith((b"http://", b"https://")):
            host, target = split_absolute_target(target)
        elif target == b"*":
            target = b"/"
        elif not target.startswith(b"/"):
            raise HeadError(400, "bad_request_target", "malformed request target")
        name = _hostname(host)
        if not name:
            raise HeadError(400, "bad_host", "invalid Host header")
        public = name if https_port == 443 else name + b":%d" % https_port
        if allowed and not allowed.allows_host_header(public):
            raise HeadError(421, "bad_host", "Host not allowed")
    except HeadError as refusal:
        return error_response(refusal.status, refusal.detail)
    status = b"301 Moved Permanently" if method in (b"GET", b"HEAD") else b"308 Permanent Redirect"
    return (b"HTTP/1.1 " + status + b"\r\nLocation: https://" + public + target
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class RedirectConnection(asyncio.Protocol):
    """One plain-HTTP client: read its head (bounded in size and time), answer, close."""

    def __init__(self, https_port: int, allowed: Allowlist, max_head: int, timeout: float,
                 acme_challenges: str | None = None) -> None:
        self.https_port = https_port
        self.acme_challenges = acme_challenges
        self.allowed = allowed
        self.max_head = max_head
        self.timeout = timeout
        self.transport: Any = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.timeout, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        if self.timer is None:
            return  # answered already; the rest of the request is not read
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > self.max_head:
                self._answer(error_response(431, "request head too large"))
            return
        head = bytes(self.buffer[:end])
        challenge = http01_answer(head, self.acme_challenges)
        self._answer(challenge if challenge is not None else redirect_answer(head, self.https_port, self.allowed))

    def _answer(self, response: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buffer.clear()
        self.transport.write(response)
        self.transport.close()


__all__ = ["RedirectConnection", "redirect_answer"]
