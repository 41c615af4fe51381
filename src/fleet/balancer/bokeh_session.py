"""Which worker should get a request, judged by the Bokeh session it names (pure, no I/O).

A Bokeh page embedded from another site often cannot keep fleet's affinity cookie (third-party
cookies are blocked), so the page request and its WebSocket would land on different workers
and make two sessions. The session id travels with every request that belongs to a session:

- the WebSocket's ``Sec-WebSocket-Protocol: bokeh, <token>``, where the token's first segment
  is base64url JSON with ``session_id`` (tens of KiB with headers and cookies inside);
- the ``Bokeh-Session-Id`` header, or the ``bokeh-session-id`` / ``bokeh-token`` query args.

Ids that a fleet worker made start with its id and ``-`` (``fleet.worker.bokeh``): they go to
that worker. Others (``external-signed``, or ``pull_session``/``server_session()`` from a Flask
view) go to the worker a rendezvous hash of the id picks among the available ones, so a session
pulled server-side and the browser's WebSocket meet on the same worker. A token that cannot be
decoded names no session: the caller falls back to the cookie, then least connections.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Iterable
from urllib.parse import parse_qsl

SEPARATOR = "-"  # between the worker id and the random part; fleet.worker.bokeh makes them
MAX_SESSION_ID = 512  # Bokeh's are 44 characters (plus a signature); anything longer is not one
MAX_TOKEN_SEGMENT = 1024 * 1024  # bounded anyway by --max-header-size; decoding stops here


def session_id_from_token(token: bytes | str) -> str | None:
    """The ``session_id`` in a Bokeh token's first segment, or None if it is not a token."""
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    first = raw.split(b".", 1)[0].strip()
    if not first or len(first) > MAX_TOKEN_SEGMENT:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(first + b"=" * (-len(first) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    session_id = payload.get("session_id") if isinstance(payload, dict) else None
    return valid_session_id(session_id)


def valid_session_id(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SESSION_ID or not value.isprintable():
        return None
    return value


def session_id_from_protocols(value: bytes) -> str | None:
    """``Sec-WebSocket-Protocol: bokeh, <token>`` (BokehJS sends exactly these two)."""
    parts = [part.strip() for part in value.split(b",")]
    if len(parts) != 2 or parts[0] != b"bokeh":
        return None
    return session_id_from_token(parts[1])


def session_id_from_query(query: bytes) -> str | None:
    """``bokeh-session-id=ID`` or ``bokeh-token=TOKEN`` among the query arguments."""
    if b"bokeh-" not in query:
        return None
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=False)
    except ValueError:
        return None
    for name, value in pairs:
        if name == "bokeh-session-id":
            return valid_session_id(value)
        if name == "bokeh-token":
            return session_id_from_token(value)
    return None


def session_id_of(protocols: bytes | None, session_header: bytes | None, query: bytes) -> str | None:
    """The session a request names: WebSocket token first, then the header, then the URL."""
    if protocols is not None:
        found = session_id_from_protocols(protocols)
        if found is not None:
            return found
    if session_header is not None:
        found = valid_session_id(session_header.strip())
        if found is not None:
            return found
    return session_id_from_query(query) if query else None


def maker_of(session_id: str, worker_ids: Iterable[str]) -> str | None:
    """The worker whose id prefixes ``session_id`` (the longest, should ids nest), if any."""
    best: str | None = None
    for worker_id in worker_ids:
        if session_id.startswith(worker_id + SEPARATOR) and (best is None or len(worker_id) > len(best)):
            best = worker_id
    return best


def rendezvous(session_id: str, worker_ids: Iterable[str]) -> str | None:
    """Highest-random-weight choice: stable while the set is, and only the sessions of a
    worker that leaves move when it does."""
    best: str | None = None
    best_weight = b""
    key = session_id.encode("utf-8", "replace")
    for worker_id in worker_ids:
        weight = hashlib.blake2b(worker_id.encode() + b"\0" + key, digest_size=8).digest()
        if best is None or weight > best_weight:
            best, best_weight = worker_id, weight
    return best


def worker_for_session(session_id: str, known: Iterable[str], available: Iterable[str]) -> str | None:
    """The maker if it is available; else (an outside id, or its maker is gone, and with it
    the session) the rendezvous choice among the available workers."""
    available = list(available)
    maker = maker_of(session_id, known)
    if maker is not None and maker in available:
        return maker
    return rendezvous(session_id, available)


__all__ = [
    "maker_of", "rendezvous", "session_id_from_protocols", "session_id_from_query",
    "session_id_from_token", "session_id_of", "valid_session_id", "worker_for_session",
]
