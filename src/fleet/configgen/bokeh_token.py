"""Where a generated proxy config finds the worker behind a Bokeh session (pure string logic).

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
test suite checks it against real Bokeh tokens for every generation length.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

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


__all__ = ["SESSION_ID_PREFIX", "TOKEN_PREFIXES", "encode_classes", "routes_sessions", "token_slot_regex"]
