"""Host and WebSocket Origin allowlists, with Bokeh's rules (``bokeh/server/util.py``).

The list given to ``--allow-websocket-origin`` also goes to Bokeh workers, so the proxy must
accept exactly what Bokeh accepts, or a WebSocket the proxy lets through gets a 403 from the
worker (or the other way round):

- an entry is ``*`` (anything), ``NAME`` or ``NAME:PORT``; ``NAME`` may have ``*`` labels
  (``*.corp.example``, ``192.168.*.*``), matching one label each, never a different number of
  labels (``example.com`` does not match ``example.com.evil.net``);
- a name without a port means port 80, on both sides: the entry ``app.example.com`` matches
  ``Origin: http://app.example.com`` and ``https://app.example.com`` (Bokeh looks at the
  Origin's ``host[:port]`` only, not its scheme) but not ``https://app.example.com:8443``;
- a ``*`` in the host itself (``Host: *.corp.example``) matches nothing (Bokeh's
  ``match_host`` would let it match the pattern ``*.corp.example``; the fuzz drill found it);
- ``NAME:*`` (any port) is matched too, but Bokeh's command line refuses it, so it is accepted
  for ``--allow-host`` only (``validate_origin_entry``).

``--allow-host`` uses the same matching against the ``Host`` header (or an absolute-form
target's authority): ``app.example.com`` accepts ``Host: app.example.com`` and
``app.example.com:80``, nothing on another port; name the public port when it is not 80
(``app.example.com:5006``, or ``app.example.com:*``). nginx's ``server_name`` ignores the
port; fleet does not, so an app that builds URLs from ``Host`` cannot be handed a foreign port.

Pure functions on ``str``; no I/O. The entries are parsed by ``fleet.rules``, which the option
declarations use too; this module matches requests against them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fleet.rules import split_host_port as _split
from fleet.rules import validate_host_entry, validate_origin_entry  # parsed where the options are declared


def match_host(host: str, pattern: str) -> bool:
    """Bokeh's ``match_host``: ``host`` (``name[:port]``) against one normalised entry."""
    if pattern == "*":
        return True
    host_name, host_port = _split(host)
    pattern_name, pattern_port = _split(pattern)
    if pattern_port == "*":
        pattern_port = None
    if pattern_port is not None and host_port != pattern_port:
        return False
    if pattern_name == "*":
        return True
    if pattern_name.startswith("[") or host_name.startswith("["):
        return pattern_name == host_name
    host_labels = host_name.split(".")
    pattern_labels = pattern_name.split(".")
    if len(host_labels) != len(pattern_labels):
        return False
    return all(p == "*" or h == p for h, p in zip(host_labels, pattern_labels))


class Allowlist:
    """Normalised entries (with the implicit ``:80``) and the match against them."""

    def __init__(self, entries: tuple[str, ...] | list[str]) -> None:
        self.entries = tuple(_with_port(entry.strip().lower()) for entry in entries)
        self._exact = frozenset(entry for entry in self.entries if "*" not in entry)
        self._patterns = tuple(entry for entry in self.entries if "*" in entry)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, host: str) -> bool:
        """Bokeh's ``check_allowlist``: ``host`` is ``name[:port]``; no port means :80."""
        host = _with_port(host.strip().lower())
        if "*" in host:
            return False  # a literal "*" is a pattern, never a host (Bokeh would let it match)
        if host in self._exact:
            return True
        return any(match_host(host, pattern) for pattern in self._patterns)

    def allows_host_header(self, host: bytes) -> bool:
        try:
            return self.allows(host.decode("ascii"))
        except UnicodeDecodeError:
            return False

    def allows_origin(self, origin: bytes) -> bool:
        """An ``Origin`` header against the list, the way Bokeh's WebSocket handler checks it:
        the URL's ``host[:port]`` (its netloc), lowercase, scheme ignored."""
        try:
            text = origin.decode("ascii").strip()
            netloc = urlsplit(text).netloc
        except (UnicodeDecodeError, ValueError):
            return False
        if not netloc or "@" in netloc:
            return False
        return self.allows(netloc)


def _with_port(value: str) -> str:
    if value == "*":
        return value
    _, port = _split(value)
    return value if port is not None else value + ":80"


__all__ = ["Allowlist", "match_host", "validate_host_entry", "validate_origin_entry"]
