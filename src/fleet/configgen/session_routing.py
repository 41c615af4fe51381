"""How the generated nginx, HAProxy and Apache configs route by Bokeh session (pure text).

A fleet worker makes session ids ``g<generation>w<index>-<random>`` (``fleet.worker.bokeh``);
the port it holds is the slot ``w<index>``, which a ``--no-proxy`` reload keeps. A request
names its session in one of three places:

- the WebSocket's ``Sec-WebSocket-Protocol: bokeh, <token>``: the token's first segment is
  base64url of ``json.dumps({"session_id": ..., ...})``;
- the ``Bokeh-Session-Id`` header, or the ``bokeh-session-id`` query argument (autoload.js
  of a ``server_session`` embed): the id in plain text.

HAProxy decodes the token itself (``ub64dec``, ``json_query``). nginx and Apache can only match
a regular expression against the encoded text, which works because the id sits at a fixed
byte offset: ``{"session_id": "`` is 16 bytes, so each byte of the id lands on known bits of
known base64 characters, and the generation digits (any count) repeat with a period of 3
bytes = 4 characters. ``token_slot_regex`` builds that expression from the bit layout; the
test suite checks it against real Bokeh tokens for generations of 1 to 6 digits.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from fleet.configgen.common import Upstream
from fleet.configgen.quoting import apache as apache_quote

if TYPE_CHECKING:
    from fleet.config import Config

# What precedes the slot in the plain session id of a worker's session.
SESSION_ID_PREFIX = "g[1-9][0-9]*"

# The token's JSON starts like this (json.dumps's default separators; the compact form too,
# should a Bokeh version switch to it).
TOKEN_PREFIXES = (b'{"session_id": "', b'{"session_id":"')

_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_DIGITS = frozenset(b"0123456789")
_NONZERO = frozenset(b"123456789")
_ANY = frozenset(range(256))

ByteClass = frozenset[int]


def _char_class(values: set[int]) -> str:
    """A regex for one base64url character whose 6-bit value is one of ``values``; written
    without backslashes (nginx and Apache read quoted strings differently)."""
    chars = sorted(_ALPHABET[value] for value in values)
    if len(chars) == 64:
        return "[A-Za-z0-9_-]"
    if len(chars) == 1:
        return "[-]" if chars[0] == "-" else chars[0]
    dash = "-" in chars
    body = [c for c in chars if c != "-"]
    ranges: list[str] = []
    i = 0
    while i < len(body):
        j = i
        while j + 1 < len(body) and ord(body[j + 1]) == ord(body[j]) + 1:
            j += 1
        ranges.append(body[i] if i == j else body[i] + ("" if j == i + 1 else "-") + body[j])
        i = j + 1
    return "[" + "".join(ranges) + ("-" if dash else "") + "]"


def encode_classes(classes: list[ByteClass]) -> str:
    """The regex of the base64 text of bytes drawn from ``classes``, starting on a 3-byte group.

    A byte's bits are split over two characters; each character's set is the projection of the
    classes it covers, exact for single bytes (the slot, ``w``, ``-``) and a superset for a digit
    class, which only ever widens what a generation may look like. A last group cut short ends
    with the character that holds the last byte's remaining bits (the following byte: any).
    """
    out: list[str] = []
    for start in range(0, len(classes), 3):
        group = classes[start:start + 3]
        a = group[0]
        b = group[1] if len(group) > 1 else _ANY
        c = group[2] if len(group) > 2 else _ANY
        out.append(_char_class({x >> 2 for x in a}))
        out.append(_char_class({((x & 3) << 4) | (y >> 4) for x in a for y in b}))
        if len(group) > 1:
            out.append(_char_class({((y & 15) << 2) | (z >> 6) for y in b for z in c}))
        if len(group) > 2:
            out.append(_char_class({z & 63 for z in c}))
    return "".join(out)


def _literal(text: bytes) -> list[ByteClass]:
    return [frozenset([byte]) for byte in text]


def _branches(prefix: bytes, slot: str) -> list[str]:
    """``prefix`` + ``g`` + [1-9][0-9]* + ``w<i>-`` as alternatives, each one aligned regex."""
    head = [*_literal(prefix + b"g"), _NONZERO]
    tail = _literal(slot.encode() + b"-")
    fill = -len(head) % 3  # digits that bring the generation to a group boundary
    branches = [encode_classes(head + [_DIGITS] * more + tail) for more in range(fill)]
    loop = "(?:" + encode_classes([_DIGITS] * 3) + ")*"
    aligned = encode_classes(head + [_DIGITS] * fill)
    for rest in range(3):
        branches.append(aligned + loop + encode_classes([_DIGITS] * rest + tail))
    return branches


def routes_sessions(config: "Config", managed: object | None = None) -> bool:
    """Whether a generated config routes by session: with affinity (``--sticky``, as fleet's
    proxy), over this machine's workers. ``--upstream`` hosts each have their own ``g1w0``, and a
    managed data plane's slots include the surge block, so there an id names no slot."""
    return config.sticky and not config.upstream and managed is None and config.workers > 1


def token_slot_regex(slot: str) -> str:
    """A regex (no anchors) matching the start of every Bokeh token whose session id was made
    by a worker on slot ``slot`` (``w<i>``), of any generation, and no other slot's."""
    if not re.fullmatch(r"w[0-9]+", slot):
        raise ValueError(f"not a worker slot: {slot!r}")
    return "(?:" + "|".join(b for prefix in TOKEN_PREFIXES for b in _branches(prefix, slot)) + ")"


# -- the three servers ---------------------------------------------------------------------

def haproxy_session_rules(slots: list[str]) -> list[str]:
    """A request naming a Bokeh session goes to the worker that made it (its id starts with
    ``g<generation>w<i>-``), before the cookie and least connections: an embed on another site
    has no cookie, and its WebSocket must still reach the worker that served autoload.js."""
    token = "field(1,.),ub64dec,json_query('$.session_id')"
    lines = [
        "    # Bokeh session affinity: the session a request names (WebSocket token, then the",
        "    # Bokeh-Session-Id header, then the bokeh-session-id / bokeh-token argument) picks the",
        "    # worker that made it, since its id starts with that worker's g<generation>w<i>-.",
        "    http-request set-var(txn.fleet_session) url_param(bokeh-session-id) if { url_param(bokeh-session-id) -m found }",
        f"    http-request set-var(txn.fleet_session) url_param(bokeh-token),{token} if {{ url_param(bokeh-token) -m found }}",
        "    http-request set-var(txn.fleet_session) req.hdr(Bokeh-Session-Id) if { req.hdr(Bokeh-Session-Id) -m found }",
        "    # BokehJS sends Sec-WebSocket-Protocol: bokeh, <token>; the token is base64url JSON.",
        f"    http-request set-var(txn.fleet_session) req.hdr(Sec-WebSocket-Protocol,-1),{token}"
        " if { req.hdr_cnt(Sec-WebSocket-Protocol) eq 2 } { req.hdr(Sec-WebSocket-Protocol,1) -m str bokeh }",
    ]
    # A server that is down is skipped by use-server: the session is gone with it anyway.
    lines += [f"    use-server {slot} if {{ var(txn.fleet_session) -m reg ^{SESSION_ID_PREFIX}{slot}- }}"
              for slot in slots]
    return lines


def nginx_session_maps(servers: list[Upstream], cookie: str) -> list[str]:
    """Maps that find the slot of the worker that made the Bokeh session a request names
    (``$fleet_route``), else ``cookie``. nginx cannot decode base64, so the WebSocket token is
    matched encoded: the id's bytes sit at a fixed offset (``token_slot_regex``)."""
    id_slot = f"^{SESSION_ID_PREFIX}(?<fleet_id_slot>w[0-9]+)-"
    return [
        "# Bokeh session affinity: the session a request names (WebSocket token, then the",
        "# Bokeh-Session-Id header, then the bokeh-session-id argument) picks the worker that",
        "# made it, since its id starts with that worker's g<generation>w<i>-; else the cookie.",
        "map $args $fleet_query_slot {",
        '    default "";',
        f'    "~(^|&)bokeh-session-id={id_slot[1:].replace("fleet_id_slot", "fleet_query_id")}" $fleet_query_id;',
        "}",
        "map $http_bokeh_session_id $fleet_header_slot {",
        "    default $fleet_query_slot;",
        f'    "~{id_slot.replace("fleet_id_slot", "fleet_header_id")}" $fleet_header_id;',
        "}",
        "# BokehJS sends Sec-WebSocket-Protocol: bokeh, <token>: base64url JSON whose session_id",
        "# starts at a fixed offset, so each slot's id has a fixed pattern of base64 characters.",
        "map $http_sec_websocket_protocol $fleet_session_slot {",
        "    default $fleet_header_slot;",
        *(f'    "~^bokeh, *{token_slot_regex(server.id)}" {server.id};' for server in servers),
        "}",
        "map $fleet_session_slot $fleet_route {",
        "    default $fleet_session_slot;",
        f'    "" {cookie};',
        "}",
    ]


def apache_session_rules(servers: list[Upstream]) -> list[str]:
    """A request naming a Bokeh session goes straight to the worker that made it (its id starts
    with ``g<generation>w<i>-``), before the cookie: an embed on another site has no cookie. The
    token is matched base64-encoded (``token_slot_regex``); no failover is needed, as
    the session lives only on that worker."""
    lines = [
        "# Bokeh session affinity: the session a request names (WebSocket token, then the",
        "# Bokeh-Session-Id header, then the bokeh-session-id argument) picks the worker that",
        "# made it, since its id starts with that worker's g<generation>w<i>-; else the cookie.",
    ]
    named = f"^{SESSION_ID_PREFIX}w[0-9]+-"
    for server in servers:
        lines += [
            "RewriteCond %{HTTP:Upgrade} websocket [NC]",
            f"RewriteCond %{{HTTP:Sec-WebSocket-Protocol}} {apache_quote('^bokeh, *' + token_slot_regex(server.id))}",
            f'RewriteRule ^/?(.*) "ws://{server.address}/$1" [P,L]',
        ]
    for server in servers:
        lines += [
            f"RewriteCond %{{HTTP:Bokeh-Session-Id}} ^{SESSION_ID_PREFIX}{server.id}-",
            f'RewriteRule ^/?(.*) "http://{server.address}/$1" [P,L]',
        ]
    for server in servers:
        lines += [
            f"RewriteCond %{{HTTP:Bokeh-Session-Id}} !{named}",
            f"RewriteCond %{{QUERY_STRING}} (^|&)bokeh-session-id={SESSION_ID_PREFIX}{server.id}-",
            f'RewriteRule ^/?(.*) "http://{server.address}/$1" [P,L]',
        ]
    return lines


__all__ = ["SESSION_ID_PREFIX", "TOKEN_PREFIXES", "apache_session_rules", "encode_classes", "haproxy_session_rules",
           "nginx_session_maps", "routes_sessions", "token_slot_regex"]
