"""Host ids: which host of several made a Bokeh session, or set an affinity cookie (pure).

A fleet started with ``--host-id ID`` makes session ids ``<host>~<worker>-<random>`` and an
affinity cookie ``fleet_affinity=<host>~<worker>``, so a front tier (``fleet balance
--resolve``) sends a session's requests to its host, and that host's proxy to its worker,
with no cookie needed (a cross-site embed has none). Without ``--host-id`` both stay
``<worker>-<random>`` and ``<worker>`` as before.

Why ``~``: Bokeh splits a signed id at ``.``, so neither part may hold one; ``~`` is unreserved
in URLs (the id travels in ``bokeh-session-id=``), a valid cookie octet, and is in neither a
worker id (``g1w0``) nor a host id (a DNS label: pod names, host names), so the host part can be
read without knowing the hosts. Imports only ``fleet.rules`` (where a host id is checked).
"""

from __future__ import annotations

from fleet.rules import HOST_ID, MAX_HOST_ID, valid_host_id

HOST_SEPARATOR = "~"  # between the host id and the worker id


def worker_key(host_id: str | None, worker_id: str) -> str:
    """What prefixes a session id and fills the affinity cookie: ``host~worker`` or ``worker``."""
    return worker_id if not host_id else host_id + HOST_SEPARATOR + worker_id


def split_host(value: str) -> tuple[str | None, str]:
    """(host id or None, the rest) of a session id or a cookie value. A host part that is not
    a valid host id counts as none: the value is left whole."""
    host, separator, rest = value.partition(HOST_SEPARATOR)
    if not separator or not HOST_ID.match(host) or not rest:
        return None, value
    return host, rest


def local_part(value: str, host_id: str | None = None) -> str:
    """A session id or cookie value as one host's proxy matches it against its worker ids: the
    host part dropped. With ``host_id`` given, a value made by another host keeps its host part,
    so it names no worker here (the caller falls back to its hash or least connections)."""
    host, rest = split_host(value)
    if host is None or (host_id is not None and host != host_id):
        return value
    return rest


__all__ = ["HOST_SEPARATOR", "MAX_HOST_ID", "local_part", "split_host", "valid_host_id", "worker_key"]
