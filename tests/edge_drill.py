"""The trust drill: hostile forwarding headers, Hosts, Origins and absolute-form targets.

A seeded, reproducible list of cases is sent to a real ``fleet up tests/apps/header_echo.py``
(``TRUST_OPTIONS``: an ``--allow-host`` and ``--allow-websocket-origin`` list, no trusted
proxy). What must hold, per case kind:

- ``forged``: any mix of forwarding headers (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``,
  ``X-Scheme``, ... in any case, repeated, with lists and junk) reaches the worker replaced:
  the worker sees ``remote_ip`` 127.0.0.1, ``protocol`` http and no forwarding header but the
  four fleet sets, with fleet's values;
- ``absolute``: an absolute-form target whose authority is not allowed is refused (400/421)
  and never reaches a worker; an allowed one reaches it in origin-form with ``Host`` replaced;
- ``host``: a disallowed or malformed ``Host`` is refused (400/421), never forwarded;
- ``origin``: a WebSocket upgrade from a disallowed ``Origin`` gets 403, never 101.

Used by ``tests/test_drills.py`` (a short run) and ``bench/drills.py trust`` (a long one).
"""

from __future__ import annotations

import json
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.balancer.trust import is_forwarding_header

APP = str(Path(__file__).resolve().parent / "apps" / "header_echo.py")
TRUST_OPTIONS = ("--allow-host", "fuzz.test", "--allow-host", "*.fuzz.test:8443",
                 "--allow-websocket-origin", "fuzz.test", "--allow-websocket-origin", "*.fuzz.test:8443")
OWN = {"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "x-forwarded-proto": "http"}

NAMES = ["X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-PROTO", "X-Forwarded-Host", "X-Forwarded-Port",
         "X-Forwarded-Prefix", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Server", "X-Real-IP",
         "x-real-ip", "X-Scheme", "Forwarded", "X-Url-Scheme", "Front-End-Https", "X-Client-IP",
         "X-Cluster-Client-IP", "True-Client-IP", "X-Original-Forwarded-For", "X-Forwarded-Whatever"]
VALUES = ["127.0.0.1", "::1", "10.0.0.1", "https", "on", "1", "for=127.0.0.1;proto=https", "evil.test",
          "127.0.0.1, 10.0.0.2", "", " ", "unix", "[::1]:80", "0.0.0.0", "https, http", "x" * 300,
          "1.2.3.4,,,", "wss", "HTTPS", "/admin", "443"]
ALLOWED_AUTHORITIES = ["fuzz.test", "FUZZ.test:80", "a.fuzz.test:8443", "b.FUZZ.test:8443"]
FOREIGN_AUTHORITIES = ["evil.test", "fuzz.test:8080", "fuzz.test.evil.test", "a.b.fuzz.test:8443",
                       "a.fuzz.test", "127.0.0.1", "localhost:5006", "[::1]:80", "fuzz.test:443",
                       "xfuzz.test", "*.fuzz.test:8443", "fuzz.test:"]
MALFORMED_AUTHORITIES = ["", "user@fuzz.test", "fuzz test", "fuzz.test:80:80", ":80", "fuzz.test,evil.test",
                         "fuzz.test\\evil", "%66uzz.test"]
BAD_HOSTS = ["evil.test", "fuzz.test:8080", "fuzz.test.evil.test", "a.b.fuzz.test:8443", "FUZZ.TEST:81",
             "a.fuzz.test", "fuzz.test:", "[::1]", "0", "fuzz.test,fuzz.test", "fuzz.test evil",
             "fuzz.test;x", "fuzz.test/x", "fuzz.test@evil"]
GOOD_ORIGINS = ["http://fuzz.test", "https://fuzz.test", "http://fuzz.test:80", "https://a.fuzz.test:8443"]
BAD_ORIGINS = ["https://fuzz.test:8443", "http://evil.test", "null", "http://fuzz.test.evil.test",
               "http://a.b.fuzz.test:8443", "fuzz.test", "http://user@fuzz.test", "file://", "",
               "http://fuzz.test:80@evil.test", "javascript:alert(1)", "http://[::1]"]


@dataclass
class Case:
    kind: str
    data: bytes
    marker: str  # the request path (unique); "" when the case must not reach a worker by path
    allowed: bool  # whether the proxy must forward it
    sent_headers: list[tuple[str, str]] = field(default_factory=list)
    authority: str = ""


def _head(target: str, host: str | None, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def trust_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for n in range(count):
        marker = f"/case/{seed}/{n}"
        kind = rng.choice(["forged", "forged", "absolute", "host", "origin"])
        if kind == "forged":
            headers = [(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randint(1, 8))]
            cases.append(Case(kind, _head(marker, "fuzz.test", headers), marker, True, headers))
        elif kind == "absolute":
            roll = rng.random()
            scheme = rng.choice(["http", "https", "HTTP"]) if roll > 0.9 else rng.choice(["http", "https"])
            if roll < 0.4:
                authority, allowed = rng.choice(ALLOWED_AUTHORITIES), scheme != "HTTP"
            elif roll < 0.8:
                authority, allowed = rng.choice(FOREIGN_AUTHORITIES), False
            else:
                authority, allowed = rng.choice(MALFORMED_AUTHORITIES), False
            target = f"{scheme}://{authority}{marker}"
            cases.append(Case(kind, _head(target, rng.choice(["fuzz.test", "evil.test"]), []), marker,
                              allowed, authority=authority))
        elif kind == "host":
            cases.append(Case(kind, _head(marker, rng.choice(BAD_HOSTS), []), marker, False))
        else:
            good = rng.random() < 0.3
            origin = rng.choice(GOOD_ORIGINS if good else BAD_ORIGINS)
            headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
                       ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Origin", origin)]
            data = _head("/ws" + marker, "fuzz.test", []).replace(b"Connection: close\r\n", b"")
            data = data[:-2] + "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n"
            cases.append(Case(kind, data, "/ws" + marker, good, headers))
    return cases


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.startswith(b"HTTP/1.1 101"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            if answer.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in answer:
                break
        return answer


@dataclass
class TrustDrill:
    cases: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    refused_that_reached_a_worker: int = 0

    def figures(self) -> dict[str, Any]:
        return {"cases": self.cases, "by kind": self.by_kind, "statuses": dict(sorted(self.statuses.items())),
                "violations": len(self.violations),
                "refused cases that reached a worker": self.refused_that_reached_a_worker}


def _check_forwarded(case: Case, seen: dict[str, Any]) -> str | None:
    headers = [(name.lower(), value) for name, value in seen["headers"]]
    if seen["remote_ip"] != "127.0.0.1" or seen["protocol"] != "http":
        return f"worker saw remote_ip={seen['remote_ip']} protocol={seen['protocol']}"
    forwarding = [(name, value) for name, value in headers if is_forwarding_header(name.encode())]
    names = sorted(name for name, _ in forwarding)
    if names != ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"]:
        return f"forwarding headers at the worker: {forwarding}"
    for name, value in forwarding:
        if name in OWN and value != OWN[name]:
            return f"{name}: {value!r} at the worker"
    return None


def trust_drill(port: int, worker_ports: list[int], seed: int, count: int) -> TrustDrill:
    drill = TrustDrill()
    cases = trust_cases(seed, count)
    for case in cases:
        drill.cases += 1
        drill.by_kind[case.kind] = drill.by_kind.get(case.kind, 0) + 1
        answer = exchange(port, case.data)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        drill.statuses[status] = drill.statuses.get(status, 0) + 1
        expected = (101 if case.kind == "origin" else 200) if case.allowed else None
        if expected is not None and status != expected:
            drill.violations.append(f"{case.kind} {case.data[:300]!r}: {status}, expected {expected}")
            continue
        if expected is None and status not in ({403} if case.kind == "origin" else {400, 421}):
            drill.violations.append(f"{case.kind} {case.data[:300]!r}: {status}, expected a refusal")
            continue
        if status == 200:
            seen = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            problem = _check_forwarded(case, seen)
            if case.kind == "absolute" and problem is None:
                host = dict((k.lower(), v) for k, v in seen["headers"]).get("host", "")
                if seen["uri"] != case.marker or host.lower() != case.authority.lower():
                    problem = f"worker saw uri={seen['uri']} host={host}"
            if problem:
                drill.violations.append(f"{case.kind} {case.data[:300]!r}: {problem}")
    reached: set[str] = set()
    for worker_port in worker_ports:
        answer = exchange(worker_port, b"GET /_received HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        reached.update(json.loads(answer.split(b"\r\n\r\n", 1)[1])["received"])
    for case in cases:
        if not case.allowed and case.marker in reached:
            drill.refused_that_reached_a_worker += 1
            drill.violations.append(f"refused {case.kind} case reached a worker: {case.data[:300]!r}")
    return drill
