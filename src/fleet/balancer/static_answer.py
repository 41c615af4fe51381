"""The answer to a request for a static file the proxy holds (``balancer.static_files``):
which copy (plain or compressed), 200, 206, 304 or 416, and its head.

Pure: an entry and the request's fields in, bytes out.

- The copy: ``encoding.choose`` among the entry's compressed copies by ``Accept-Encoding``
  (q-values); every answer for a file that has copies says ``Vary: Accept-Encoding``, and each
  copy has its own ETag (``encoding.coded_etag``), so caches keep them apart and a 304 is
  given for the copy the client would get.
- Conditional requests (RFC 9110 13.1): ``If-None-Match`` (weak comparison with the chosen
  copy's tag) decides when present, else ``If-Modified-Since``; evaluated before ``Range``.
- ``Range`` (RFC 9110 14): one byte range of the plain bytes (a request with ``Range`` gets
  the plain copy, as nginx's ``gzip_static`` serves ranges of the plain file only); several
  ranges, or a malformed ``Range``, get the whole file (200), which RFC 9110 allows; a range past
  the end gets 416. ``If-Range`` that does not match (strong comparison, or the exact date) gets
  the whole file.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from fleet.balancer.encoding import IDENTITY, choose
from fleet.balancer.static_files import LONG_CACHE, SHORT_CACHE, StaticFile

if TYPE_CHECKING:
    from fleet.balancer.request_rules import Request

UNSATISFIABLE = (-1, -1)
_REASONS = {200: b"OK", 206: b"Partial Content", 304: b"Not Modified", 416: b"Range Not Satisfiable"}


def not_modified(entry: StaticFile, if_none_match: bytes | None, if_modified_since: bytes | None,
                 etag: bytes | None = None) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present (against ``etag``, the chosen copy's
    tag, the plain one's by default); else If-Modified-Since."""
    if if_none_match is not None:
        tags = {tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")}
        return b"*" in tags or (etag or entry.etag) in tags
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since.decode("latin-1")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return entry.mtime <= since
    return False


def byte_range(value: bytes, size: int) -> tuple[int, int] | None:
    """(first, last) of a ``Range: bytes=...`` value with one range, ``UNSATISFIABLE``, or None
    (several ranges, another unit, malformed: the whole file is sent)."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition(b"-")
    if not dash or not (first_text or last_text) or not (first_text + last_text).isdigit():
        return None
    if len(first_text) > 18 or len(last_text) > 18:
        return None
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        return (max(0, size - suffix), size - 1) if suffix and size else UNSATISFIABLE
    first = int(first_text)
    last = int(last_text) if last_text else max(first, size - 1)
    if last < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, min(last, size - 1)


def range_applies(entry: StaticFile, if_range: bytes | None) -> bool:
    """Whether ``Range`` is honoured: no ``If-Range``, or one that names this file exactly."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(b'"'):
        return value == entry.etag  # strong comparison: a weak tag never matches
    return value == entry.last_modified


def static_answer(entry: StaticFile, request: "Request", *, versioned: bool, keep_alive: bool) -> tuple[int, bytes]:
    """(status, whole response) for a file the proxy holds."""
    span = None
    if request.range is not None and request.method == b"GET" and range_applies(entry, request.if_range):
        span = byte_range(request.range, len(entry.body))
    coding = choose(request.accept_encoding, entry.offered) if span is None else IDENTITY
    body, etag = entry.codings[coding] if coding != IDENTITY else (entry.body, entry.etag)
    if not_modified(entry, request.if_none_match, request.if_modified_since, etag):
        return 304, response_head(entry, status=304, versioned=versioned, keep_alive=keep_alive, etag=etag)
    extra = b""
    status = 200
    if span == UNSATISFIABLE:
        status, body = 416, b""
        extra = b"Content-Range: bytes */%d\r\n" % len(entry.body)
    elif span is not None:
        status = 206
        extra = b"Content-Range: bytes %d-%d/%d\r\n" % (span[0], span[1], len(entry.body))
        body = entry.body[span[0]:span[1] + 1]
    head = response_head(entry, status=status, versioned=versioned, keep_alive=keep_alive, etag=etag,
                         coding=coding, length=len(body), extra=extra)
    return status, head if request.method == b"HEAD" else head + body


def response_head(entry: StaticFile, *, status: int, versioned: bool, keep_alive: bool, etag: bytes | None = None,
                  coding: str = IDENTITY, length: int | None = None, extra: bytes = b"") -> bytes:
    """The response head for a file or one copy of it (200, 206, 416 with a length; 304)."""
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"ETag: " + (etag or entry.etag),
             b"Last-Modified: " + entry.last_modified, b"Cache-Control: " + (LONG_CACHE if versioned else SHORT_CACHE)]
    if entry.codings:
        lines.append(b"Vary: Accept-Encoding")
    if status != 304:
        if coding != IDENTITY:
            lines.append(b"Content-Encoding: " + coding.encode("ascii"))
        else:
            lines.append(b"Accept-Ranges: bytes")
        lines += [b"Content-Type: " + entry.content_type,
                  b"Content-Length: %d" % (len(entry.body) if length is None else length)]
    lines.append(b"Connection: keep-alive" if keep_alive else b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


__all__ = ["UNSATISFIABLE", "byte_range", "not_modified", "range_applies", "response_head", "static_answer"]
