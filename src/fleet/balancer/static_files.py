"""Static files the proxy answers itself: BokehJS's ``/static/`` and each app's ``static/``.

The Bokeh deployment guide has nginx serve these from disk so workers spend no time on
JavaScript bundles; fleet's proxy does the same. uvloop has no ``sendfile`` for transports and
TLS could not use it anyway, so files are read once into memory (they are few, and
immutable for a run: BokehJS is versioned, an app's ``static/`` belongs to its code) and
answered from there, bounded by ``MAX_FILE`` each and ``MAX_CACHE`` in all; a bigger file is
left to the workers (``root_for`` says None for it), and past ``MAX_CACHE`` files are read
again for each request (at most ``MAX_FILE`` bytes each), answered right but not kept. A reload is a deploy: fleet then replaces the ``StaticFiles`` (and its
cache) once the new generation serves, so changed files go out with new bytes and a new ETag.

- Routes: ``<prefix>/static/...`` from Bokeh's static directory, except
  ``<prefix>/static/extensions/...`` (Bokeh's runtime extension directories: workers);
  ``<prefix>/<app>/static/...`` from that directory app's ``static/``.
- Safety: the path is percent-decoded once; ``..``, empty or dot segments, backslashes, NUL and
  symlinks out of the root are refused (404, so nothing is revealed), checked on the real path.
  Only regular files are read: ``stat`` before ``open`` (a FIFO there, which the app's own
  code can make, would block ``open`` and with it the whole master until someone writes to
  it), ``O_NONBLOCK | O_NOFOLLOW`` on the open, and ``fstat`` after it must show the same
  regular file (nothing swapped in between).
- Caching: ``ETag`` (size and mtime) and ``Last-Modified``; ``If-None-Match`` /
  ``If-Modified-Since`` give 304; ``HEAD`` gets the head only. A ``?v=`` (BokehJS's version
  hash) makes the answer ``immutable`` for a year, as Bokeh's own static handler does.

Pure except ``StaticFiles.lookup``, which reads the disk the first time a file is asked for.
"""

from __future__ import annotations

import mimetypes
import os
import stat as stat_mode
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Iterable
from urllib.parse import unquote_to_bytes

MAX_FILE = 8 * 1024 * 1024
MAX_CACHE = 64 * 1024 * 1024
MAX_URLS = 4096  # URL paths remembered for files found (several URLs may name one file)
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
LONG_CACHE = b"public, max-age=31536000, immutable"
SHORT_CACHE = b"public, max-age=0, must-revalidate"

_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json", ".map": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff": "font/woff",
    ".woff2": "font/woff2", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    etag: bytes  # quoted
    last_modified: bytes  # HTTP date
    mtime: int  # whole seconds
    content_type: bytes


@dataclass(frozen=True)
class Root:
    url_prefix: bytes  # b"/dash/static/", b"/dash/gallery/static/"
    directory: str  # real path
    excluded: tuple[bytes, ...] = ()  # relative paths under url_prefix left to the workers


def safe_relative(encoded: bytes) -> str | None:
    """The relative file path of a URL tail, or None when it could escape or is odd."""
    try:
        text = unquote_to_bytes(encoded).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or "\\" in text or "\0" in text or text.startswith("/"):
        return None
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return "/".join(parts)


def content_type(path: str) -> bytes:
    extension = os.path.splitext(path)[1].lower()
    known = _TYPES.get(extension) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    return known.encode("ascii")


def not_modified(entry: StaticFile, if_none_match: bytes | None, if_modified_since: bytes | None) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present; else If-Modified-Since."""
    if if_none_match is not None:
        tags = {tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")}
        return b"*" in tags or entry.etag in tags
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since.decode("latin-1")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return entry.mtime <= since
    return False


def response_head(entry: StaticFile, *, status: int, versioned: bool, keep_alive: bool) -> bytes:
    """The response head for a file (200 with its length, or 304), without the body."""
    lines = [b"HTTP/1.1 200 OK" if status == 200 else b"HTTP/1.1 304 Not Modified",
             b"ETag: " + entry.etag, b"Last-Modified: " + entry.last_modified,
             b"Cache-Control: " + (LONG_CACHE if versioned else SHORT_CACHE)]
    if status == 200:
        lines += [b"Content-Type: " + entry.content_type, b"Content-Length: %d" % len(entry.body)]
    lines.append(b"Connection: keep-alive" if keep_alive else b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class StaticFiles:
    """The roots the proxy serves, and the files read so far (bounded)."""

    def __init__(self, roots: Iterable[Root]) -> None:
        # Longest prefix first: an app's /dash/gallery/static/ before /dash/static/ never
        # overlap, but a prefix-less /static/ must not swallow /static2/.
        self.roots = sorted(roots, key=lambda root: len(root.url_prefix), reverse=True)
        self._cache: dict[str, StaticFile] = {}  # by real path
        self._by_url: dict[bytes, StaticFile] = {}  # by URL path: no realpath on a hit
        self._cached_bytes = 0

    def root_for(self, path: bytes) -> tuple[Root, bytes] | None:
        """(root, tail) when ``path`` is one of ours; None leaves the request to the workers
        (Bokeh's extension directories, and a file too big to keep in memory)."""
        for root in self.roots:
            if path.startswith(root.url_prefix):
                tail = path[len(root.url_prefix):]
                if any(tail.startswith(excluded) for excluded in root.excluded):
                    return None
                if path not in self._by_url and self._too_big(root, tail):
                    return None
                return root, tail
        return None

    def _resolve(self, root: Root, tail: bytes) -> str | None:
        relative = safe_relative(tail)
        if relative is None:
            return None
        path = os.path.realpath(os.path.join(root.directory, relative))
        if os.path.commonpath([path, root.directory]) != root.directory:
            return None  # a symlink out of the root
        return path

    def _too_big(self, root: Root, tail: bytes) -> bool:
        path = self._resolve(root, tail)
        if path is None:
            return False
        try:
            info = os.stat(path)
        except OSError:
            return False
        return stat_mode.S_ISREG(info.st_mode) and info.st_size > MAX_FILE

    def lookup(self, root: Root, tail: bytes) -> StaticFile | None:
        """The file for ``tail`` under ``root``; None: not found (or refused, or too big)."""
        url = root.url_prefix + tail
        known = self._by_url.get(url)
        if known is not None:
            return known
        path = self._resolve(root, tail)
        if path is None:
            return None
        cached = self._cache.get(path)
        if cached is not None:
            self._remember(url, cached)
            return cached
        found = read_regular(path)
        if found is None:
            return None
        body, info = found
        mtime = int(info.st_mtime)
        entry = StaticFile(body=body, etag=b'"%x-%x"' % (len(body), info.st_mtime_ns),
                           last_modified=formatdate(mtime, usegmt=True).encode("ascii"),
                           mtime=mtime, content_type=content_type(path))
        if self._cached_bytes + len(body) <= MAX_CACHE:
            self._cache[path] = entry
            self._cached_bytes += len(body)
            self._remember(url, entry)
        return entry

    def _remember(self, url: bytes, entry: StaticFile) -> None:
        if len(self._by_url) < MAX_URLS:
            self._by_url[url] = entry

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes


def read_regular(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes of ``path`` if it is a regular file of at most ``MAX_FILE`` bytes, else None.
    Never blocks on a FIFO or a device: checked before ``open``, opened non-blocking without
    following a symlink, and checked again on the open file."""
    try:
        before = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat_mode.S_ISREG(before.st_mode) or before.st_size > MAX_FILE:
        return None
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (not stat_mode.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino)
                or info.st_size > MAX_FILE):
            return None
        chunks = []
        size = 0
        while size <= MAX_FILE:
            chunk = os.read(fd, min(1 << 20, MAX_FILE + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    if size > MAX_FILE:
        return None  # it grew while being read
    return b"".join(chunks), info


def bokeh_roots(prefix: str | None, bokeh_static: str | None,
                app_static: Iterable[tuple[str, str]]) -> list[Root]:
    """The roots of a Bokeh fleet: BokehJS at ``<prefix>/static/`` (minus ``extensions/``) and
    each directory app's ``static/`` at ``<prefix>/<name>/static/``."""
    base = (prefix or "").encode()
    roots = []
    if bokeh_static:
        roots.append(Root(base + b"/static/", os.path.realpath(bokeh_static), (b"extensions/",)))
    for name, directory in app_static:
        if os.path.isdir(directory):
            roots.append(Root(base + b"/" + name.encode() + b"/static/", os.path.realpath(directory)))
    return roots


__all__ = [
    "LONG_CACHE", "MAX_CACHE", "MAX_FILE", "Root", "StaticFile", "StaticFiles", "bokeh_roots",
    "not_modified", "read_regular", "response_head", "safe_relative",
]
