"""Option values as people write them: sizes (``100MiB``), durations (``30s``), ports, booleans.

Pure functions, one per kind of value, used by ``fleet.config`` to parse every source (command
line, environment, ``fleet.toml``) the same way. Each raises ``ValueError`` with a message that
says what a valid value looks like.
"""

from __future__ import annotations

import re

from fleet.rules import parse_cidr, validate_host_entry, validate_origin_entry

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": KIB, "kb": KIB, "kib": KIB,
    "m": MIB, "mb": MIB, "mib": MIB,
    "g": GIB, "gb": GIB, "gib": GIB,
}


def parse_size(value: str | int) -> int:
    """Parse ``100MiB``, ``64k``, ``512M`` or a plain byte count (binary units, like nginx)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 512, 64KiB, 100MiB, 2GiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(value: str | int | float) -> float:
    """Parse seconds: ``30``, ``2.5``, ``30s``, ``500ms``, ``2m``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30, 2.5, 500ms, 2m)")
        scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
        seconds = float(match.group(1)) * scale
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


def parse_bool(value: str | bool | int) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r} (use true/false, 1/0, yes/no)")


def parse_port(value: str | int) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range 0-65535: {value}")
    return port


def parse_positive_int(value: str | int) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1: {value}")
    return number


def parse_count(value: str | int) -> int:
    """A whole number, 0 or more (0 usually means "off")."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise ValueError(f"must not be negative: {value}")
    return number


def parse_network(value: str) -> str:
    """A CIDR network (``10.0.0.0/8``, ``fc00::/7``) or one address; returned normalised."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=False))
    except ValueError:
        raise ValueError(f"not an IP network or address: {value!r} (use e.g. 10.0.0.0/8, ::1)") from None


# Loopback and private networks: where a Prometheus next to fleet scrapes from.
DEFAULT_METRICS_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                         "fc00::/7", "fe80::/10")


def parse_trusted_proxy(value: str) -> str:
    return parse_cidr(value)


def parse_origin_entry(value: str) -> str:
    return validate_origin_entry(value)


def parse_host_entry(value: str) -> str:
    return validate_host_entry(value)


def parse_hsts(value: str | int) -> int:
    seconds = parse_duration(value)
    if seconds < 1 or not float(seconds).is_integer():
        raise ValueError(f"HSTS max-age must be a whole number of seconds, at least 1: {value!r}")
    return int(seconds)


def describe_character(ch: str) -> str:
    """``'\\t' (U+0009)``: a character named so that an error shows it even when invisible."""
    return f"{ch!r} (U+{ord(ch):04X})"


def _first_bad(text: str, allowed: re.Pattern[str]) -> str | None:
    return next((ch for ch in text if not allowed.fullmatch(ch)), None)


# Control characters (C0, DEL, C1), the Unicode line and paragraph separators and the BOM: none
# belongs in an option value, and each can end a line or a comment in some generated file.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def parse_text(value: str, what: str = "this value") -> str:
    """Free text (a shell command, an argument, a module): printable, no control character."""
    text = str(value)
    bad = _CONTROL.search(text)
    if bad:
        raise ValueError(f"{what} must not contain control characters: {text!r} has "
                         f"{describe_character(bad.group())}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid text (an undecodable byte at {exc.start}): {text!r}") from None
    return text


# ``"`` and ``\`` cannot be written in every generated format (Apache has no escape for a
# final backslash), ``$`` and the backquote start substitutions (nginx, HAProxy, shells).
# Spaces, ``'``, ``;``, ``#`` and braces are fine: every writer quotes them.
_PATH_FORBIDDEN = '"\\$`'


def parse_file_path(value: str) -> str:
    """A file or directory path: printable, none of ``"``, ``\\``, ``$``, backquote."""
    text = parse_text(value, "a path")
    if not text.strip():
        raise ValueError("a path must not be empty")
    bad = next((ch for ch in text if ch in _PATH_FORBIDDEN), None)
    if bad is not None:
        raise ValueError(f"a path must not contain {describe_character(bad)} (nor any of "
                         f"\" \\ $ `): {text!r}")
    return text


def parse_socket_path(value: str) -> str:
    """A unix socket path: a file path without ``,`` (HAProxy splits a bind address list there)."""
    text = parse_file_path(value)
    if "," in text:
        raise ValueError(f"a socket path must not contain ',' (U+002C): {text!r}")
    return text


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                        r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")
_HOST_CHAR = re.compile(r"[A-Za-z0-9_.:\[\]-]")


def parse_host(value: str) -> str:
    """A host: an IPv4 or IPv6 address (``::1`` or ``[::1]``) or a DNS name; returned unchanged."""
    import ipaddress

    text = str(value).strip()
    bad = _first_bad(text, _HOST_CHAR)
    if bad is not None:
        raise ValueError(f"not a host: {text!r} has {describe_character(bad)} (use an IP address "
                         f"or a DNS name: letters, digits, '-', '.')")
    bracketed = text.startswith("[") and text.endswith("]")
    bare = text[1:-1] if bracketed else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None and (address.version == 6 or not bracketed):
        return text
    if bracketed or not _HOST_NAME.fullmatch(text):
        raise ValueError(f"not a host: {text!r} (use an IP address or a DNS name)")
    return text


def parse_hostport(value: str) -> str:
    """Validate ``HOST:PORT`` (``[::1]:80`` for IPv6) and return it unchanged."""
    text = str(value).strip()
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(\d+)", text)
    if not match:
        raise ValueError(f"not HOST:PORT: {value!r}")
    try:
        parse_host(match.group(1))
    except ValueError as exc:
        raise ValueError(f"not HOST:PORT: {exc}") from None
    parse_port(match.group(2))
    return text


# RFC 3986 path characters: unreserved, sub-delims, ":", "@", "/" and %XX escapes.
_PATH_CHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]")


def parse_url_path(value: str, what: str = "a URL path") -> str:
    """A URL path as RFC 3986 spells it: ``/`` then letters, digits, ``-._~!$&'()*+,;=:@/`` and
    ``%XX`` escapes only (no space, no control character, no ``"``, ``?``, ``#``, braces)."""
    text = str(value)
    if not text.startswith("/"):
        raise ValueError(f"{what} must start with '/': {value!r}")
    bad = _first_bad(text, _PATH_CHAR)
    if bad is not None:
        raise ValueError(f"{what} takes only RFC 3986 path characters (letters, digits, "
                         f"-._~!$&'()*+,;=:@/ and %XX): {text!r} has {describe_character(bad)}")
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise ValueError(f"{what}: '%' must start a %XX escape (two hex digits): {text!r}")
    if "//" in text:
        # An empty segment: clients and servers merge or keep them differently (and a target
        # starting with // reads as an authority), so a route on one would not match the same
        # requests everywhere it is written.
        raise ValueError(f"{what} has an empty segment ('//'): {text!r}")
    return text


_TOKEN_CHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]")


def parse_token(value: str) -> str:
    """An HTTP header or cookie name: an RFC 9110 token."""
    text = str(value).strip()
    bad = _first_bad(text, _TOKEN_CHAR)
    if not text or bad is not None:
        raise ValueError(f"not a header or cookie name (an HTTP token): {text!r}"
                         + (f" has {describe_character(bad)}" if bad else ""))
    return text


def parse_log_level(value: str) -> str:
    level = str(value).strip().lower()
    if level not in {"debug", "info", "warning", "error", "critical"}:
        raise ValueError(f"not a log level: {value!r} (debug, info, warning, error, critical)")
    return level
