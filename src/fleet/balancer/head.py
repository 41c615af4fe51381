"""HTTP head rules of the proxy: what is accepted, what is forwarded, how a body is framed;
and which implementation of the common case runs.

The rules are pure functions (bytes in, bytes or a ``HeadError`` out), one module per
direction: ``balancer.request_rules`` (a client's request head: smuggling, hop-by-hop and
forwarding headers, the target; ``forward_request``) and ``balancer.response_rules`` (a worker's
response head, body framing, the proxy's own answers; ``response_head_raw``). The proxy reads
them from here, with ``FAST_REQUEST_HEAD``/``FAST_RESPONSE_HEAD``: the optional compiled
``balancer._speedups`` for the common case, configured here with the rule modules' own tables.
"""

from __future__ import annotations

import os

from fleet.balancer.request_rules import (
    _REQUEST_SPECIAL, _VALID_HOSTS, FORWARDING, HOP_BY_HOP, IDEMPOTENT, KIND_NAMES, HeadError, Request,
    connection_tokens, forward_request, parse_length, split_absolute_target, valid_host,
)
from fleet.balancer.response_rules import (
    _PLAIN_HEADS, CHUNKED, LAST_CHUNK, LENGTH, NO_BODY, UNTIL_CLOSE, body_framing, chunk, error_response,
    local_response, response_head, response_head_raw, split_head, status_reason,
)


def _load_speedups() -> object | None:
    """The optional C module (``balancer/_speedups.c``): the common request head and a cached
    response head without a Python frame. None when it was not built (no compiler at install)
    or ``FLEET_PURE_PYTHON=1``; the Python functions do the same work then. It declines (None)
    whatever it does not handle, so every rule and every refusal stays written in Python, once."""
    if os.environ.get("FLEET_PURE_PYTHON", "") == "1":
        return None
    try:
        import fleet.balancer._speedups as _speedups  # type: ignore[import-not-found]
    except ImportError:
        return None
    if getattr(_speedups, "KIND_NAMES", None) != KIND_NAMES:
        return None  # built from another version of request_rules.py: not to be trusted
    _speedups.configure(Request, _REQUEST_SPECIAL, _VALID_HOSTS, _PLAIN_HEADS)
    return _speedups


SPEEDUPS = _load_speedups()
# request_head(method, url, http10, keep_alive, headers, client_ip, scheme, default_host) ->
# Request | None, for a peer that is not a --trusted-proxy; None: call forward_request.
FAST_REQUEST_HEAD = getattr(SPEEDUPS, "request_head", None)
# response_head(raw, status, head_request, http10_client, keep_alive, set_cookie, extra) ->
# response_head_raw's answer | None; None: call response_head_raw.
FAST_RESPONSE_HEAD = getattr(SPEEDUPS, "response_head", None)
HOT_PATH = "compiled" if SPEEDUPS is not None else "pure Python"


__all__ = [
    "CHUNKED", "FAST_REQUEST_HEAD", "FAST_RESPONSE_HEAD", "FORWARDING", "HOP_BY_HOP", "HOT_PATH", "IDEMPOTENT",
    "KIND_NAMES", "LAST_CHUNK", "LENGTH", "NO_BODY", "SPEEDUPS", "UNTIL_CLOSE", "HeadError", "Request",
    "body_framing", "chunk", "connection_tokens", "error_response", "forward_request", "local_response",
    "parse_length", "response_head", "response_head_raw", "split_absolute_target", "split_head", "status_reason",
    "valid_host",
]
