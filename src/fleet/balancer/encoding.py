"""Content codings: which one a client accepts (``Accept-Encoding`` with q-values), which
responses are worth compressing, and how a worker's response head changes when its body is
compressed on the way.

Pure functions, bytes in and decisions out; the compressors themselves (zlib, brotli, zstd)
are in ``balancer.compressor``, the static files' encoded copies in ``balancer.static_files``.

- ``choose``: RFC 9110 12.5.3. ``q=0`` refuses a coding, ``*`` stands for every coding not
  named, ``identity`` is acceptable unless refused (by name or by ``*;q=0``). Among the codings
  the proxy offers, the highest q wins; a tie goes to the proxy's order of preference. A coding
  is chosen over identity only if its q is at least identity's. No ``Accept-Encoding`` at all
  means identity (as nginx and Caddy do: RFC 9110 allows any coding then, but old clients that
  send nothing may not decode). A malformed element (bad q) counts as refused: never guess.
  When even identity is refused (``*;q=0``), identity is sent anyway rather than a 406, as
  RFC 9110 12.5.3 allows and nginx and Caddy do.
- ``compressible``: text types (``text/*`` but ``text/event-stream``, JSON, JavaScript, XML,
  SVG, WASM), as Caddy's and nginx's usual lists.
- ``compressed_head``: the worker's head bytes without ``Content-Length`` (the body's length
  changes) and ``Accept-Ranges``, with ``Content-Encoding``, ``Vary: Accept-Encoding`` and a
  strong ``ETag`` made weak (the bytes differ; nginx does the same).
"""

from __future__ import annotations

import re

IDENTITY = "identity"
# A worker's body shorter than this is sent as it is: the framing costs more than it saves
# (Caddy's default minimum length is 512 bytes too).
MIN_SIZE = 512
MAX_ELEMENTS = 32  # of an Accept-Encoding value; the rest is ignored
_ALIASES = {"x-gzip": "gzip"}
_Q = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")

# Accept-Encoding values already parsed: a client sends the same value on every request.
# Bounded: past the bound, values are parsed each time (a client cannot grow it).
_PARSED: dict[bytes, dict[str, float]] = {}
_PARSED_MAX = 256
_PARSED_VALUE_MAX = 256


def parse_accept(value: bytes) -> dict[str, float]:
    """Coding -> q of an ``Accept-Encoding`` value (lowercase names; ``*`` kept as a name).
    A repeated name keeps its first q; a malformed q is 0 (refused)."""
    known = _PARSED.get(value)
    if known is not None:
        return known
    prefs: dict[str, float] = {}
    for element in value.decode("latin-1").split(",")[:MAX_ELEMENTS]:
        name, _, params = element.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, eq, number = param.partition("=")
            if key.strip().lower() == "q":
                number = number.strip()
                q = float(number) if eq and _Q.match(number) else 0.0
        name = _ALIASES.get(name, name)
        prefs.setdefault(name, q)
    if len(value) <= _PARSED_VALUE_MAX:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[value] = prefs
    return prefs


def choose(accept: bytes | None, offered: tuple[str, ...]) -> str:
    """The coding to send (``identity`` for none) for a client's ``Accept-Encoding`` among
    ``offered`` (the proxy's preference order)."""
    if accept is None or not offered:
        return IDENTITY
    prefs = parse_accept(accept)
    star = prefs.get("*")
    best = IDENTITY
    best_q = 0.0
    for coding in offered:
        q = prefs.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best == IDENTITY:
        return IDENTITY
    identity_q = prefs.get(IDENTITY, 0.0)  # only a named identity competes with a coding
    return best if best_q >= identity_q else IDENTITY


_COMPRESSIBLE = frozenset({
    "application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
    "application/xml", "application/xhtml+xml", "application/atom+xml", "application/rss+xml",
    "application/wasm", "application/manifest+json", "application/ld+json", "application/geo+json",
    "application/x-ndjson", "image/svg+xml", "image/x-icon", "image/bmp", "font/ttf", "font/otf",
})


def compressible(content_type: bytes | None) -> bool:
    """Whether a body of this type is worth compressing (text, not a live event stream)."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    if media.startswith("text/"):
        return media != "text/event-stream"
    return media in _COMPRESSIBLE or media.endswith(("+json", "+xml"))


def coded_etag(etag: bytes, coding: str) -> bytes:
    """The ETag of an encoded copy of a static file: its own tag, as nginx's ``gzip_static``
    files and Apache's ``-gzip`` suffix have (a cache keeps the two apart)."""
    if coding == IDENTITY:
        return etag
    return etag[:-1] + b"-" + coding.encode("ascii") + b'"'


# -- a worker's response head, when its body is compressed on the way ------------------------
_FIELD = re.compile(rb"\r\n([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n|\Z)")
_DROPPED = frozenset({b"content-length", b"accept-ranges"})


def worker_fields(raw: bytes) -> dict[bytes, bytes]:
    """The header fields of a worker's head (lowercase name -> value; repeated names joined
    with a comma, as RFC 9110 5.3 allows for the ones read here)."""
    fields: dict[bytes, bytes] = {}
    for name, value in _FIELD.findall(raw):
        lower = name.lower()
        fields[lower] = fields[lower] + b", " + value if lower in fields else value
    return fields


def worth_compressing(status: int, fields: dict[bytes, bytes]) -> bool:
    """Whether a worker's response (not HEAD, not an upgrade: the caller checks) is compressed:
    a 2xx-5xx with a body (not 204/206/304), not already encoded, a text type, at least
    ``MIN_SIZE`` bytes when its length is known, and no ``Cache-Control: no-transform``."""
    if status < 200 or status in (204, 206, 304):
        return False
    if b"content-encoding" in fields or b"content-range" in fields:
        return False
    if not compressible(fields.get(b"content-type")):
        return False
    length = fields.get(b"content-length")
    if length is not None:
        try:
            if int(length.split(b",")[0]) < MIN_SIZE:
                return False
        except ValueError:
            return False
    return b"no-transform" not in fields.get(b"cache-control", b"").lower()


def compressed_head(raw: bytes, coding: str) -> bytes:
    """``raw`` (status line and header lines, CRLF-separated, no final empty line) for a body
    sent with ``coding``: no length, the coding named, ``Vary`` and a weak ``ETag``."""
    lines = raw.split(b"\r\n")
    out = [lines[0]]
    vary_done = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lower = name.strip().lower()
        if lower in _DROPPED:
            continue
        if lower == b"etag":
            tag = value.strip()
            if tag.startswith(b'"'):
                line = name + b": W/" + tag
        elif lower == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"*" not in tokens and b"accept-encoding" not in tokens:
                line = line.rstrip() + b", Accept-Encoding"
            vary_done = True
        out.append(line)
    out.append(b"Content-Encoding: " + coding.encode("ascii"))
    if not vary_done:
        out.append(b"Vary: Accept-Encoding")
    return b"\r\n".join(out)


__all__ = ["IDENTITY", "MIN_SIZE", "choose", "coded_etag", "compressed_head", "compressible", "parse_accept",
           "worker_fields", "worth_compressing"]
