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
- Compression: a text file (``encoding.compressible``) is compressed once, when first read
  (``compressor.compress_static``: brotli when installed, and gzip), and the copies are kept
  beside the plain bytes; an entry's copies count toward ``MAX_CACHE`` (a file that does not
  fit with them is kept plain, or not at all). A fresh ``NAME.br``/``NAME.zst``/``NAME.gz``
  beside the file (not older than it) is used instead of compressing, as nginx's
  ``gzip_static`` and Caddy's ``precompressed`` do: the way to serve brotli -q 11. Which copy
  a client gets is ``balancer.static_answer``'s choice.

Pure except ``StaticFiles.lookup``, which reads the disk the first time a file is asked for.
"""

from __future__ import annotations

import mimetypes
import os
import stat as stat_mode
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Callable, Iterable, Protocol, TypeVar
from urllib.parse import unquote_to_bytes

from fleet.balancer.compressor import STATIC_CODINGS, compress_static
from fleet.balancer.encoding import coded_etag, compressible

MAX_FILE = 8 * 1024 * 1024
MAX_CACHE = 64 * 1024 * 1024
MAX_URLS = 4096  # URL paths remembered for files found (several URLs may name one file)
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
LONG_CACHE = b"public, max-age=31536000, immutable"
SHORT_CACHE = b"public, max-age=0, must-revalidate"
# Precompressed files beside an original, by coding; and the order codings are preferred in
# when a client accepts several equally (the smallest first).
PRECOMPRESSED = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}
PREFERENCE = ("br", "zstd", "gzip")
MIN_COMPRESS = 256  # smaller files are sent as they are

_TYPES = {
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json", ".map": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff": "font/woff",
    ".woff2": "font/woff2", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8",
}


T = TypeVar("T")


class Future(Protocol[T]):
    """What ``StaticFiles`` needs of an ``asyncio.Future`` (kept abstract: no event loop here)."""

    def add_done_callback(self, callback: Callable[["Future[T]"], object]) -> None: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...

    def result(self) -> T: ...


# Runs a function elsewhere (``loop.run_in_executor``); its callbacks run in the event loop.
Offload = Callable[[Callable[[], "StaticFile"]], Future["StaticFile"]]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    etag: bytes  # quoted
    last_modified: bytes  # HTTP date
    mtime: int  # whole seconds
    content_type: bytes
    # coding -> (body, ETag): the compressed copies, best first (``PREFERENCE``).
    codings: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    @property
    def offered(self) -> tuple[str, ...]:
        return tuple(self.codings)

    @property
    def size(self) -> int:
        """The bytes it holds in memory, copies included (what ``MAX_CACHE`` bounds)."""
        return len(self.body) + sum(len(body) for body, _ in self.codings.values())


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


class StaticFiles:
    """The roots the proxy serves, and the files read so far (bounded)."""

    def __init__(self, roots: Iterable[Root], offload: Offload | None = None) -> None:
        # Longest prefix first: an app's /dash/gallery/static/ before /dash/static/ never
        # overlap, but a prefix-less /static/ must not swallow /static2/.
        self.roots = sorted(roots, key=lambda root: len(root.url_prefix), reverse=True)
        self._cache: dict[str, StaticFile] = {}  # by real path
        self._by_url: dict[bytes, StaticFile] = {}  # by URL path: no realpath on a hit
        self._cached_bytes = 0
        # Runs the compression of a file's copies off the event loop (a thread: zlib, brotli
        # and zstd release the GIL), so the first read of bokeh.min.js (~0.1-0.2 s of CPU)
        # stalls nobody; None: compressed in the caller (pure tests).
        self._offload = offload
        self._compressing: dict[int, Future[StaticFile]] = {}  # id(plain entry) -> its copies

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
        room = MAX_CACHE - self._cached_bytes
        if len(body) > room:
            return entry  # answered right (plain), but neither kept nor compressed for each request
        self._cache[path] = entry
        self._cached_bytes += entry.size
        self._remember(url, entry)
        if compressible(entry.content_type) and len(body) >= MIN_COMPRESS:
            room -= len(body)
            if self._offload is None:
                self._add_codings(path, entry, with_codings(entry, path, info, room))
            else:
                future = self._offload(lambda: with_codings(entry, path, info, room))
                self._compressing[id(entry)] = future
                future.add_done_callback(lambda done: self._compressed(path, entry, done))
        return self._cache[path]

    def pending(self, entry: StaticFile) -> Future[StaticFile] | None:
        """The compression of ``entry``'s copies, while it runs (None: done, or none)."""
        return self._compressing.get(id(entry))

    def _compressed(self, path: str, entry: StaticFile, done: Future[StaticFile]) -> None:
        self._compressing.pop(id(entry), None)
        if not done.cancelled() and done.exception() is None:
            self._add_codings(path, entry, done.result())

    def _add_codings(self, path: str, plain: StaticFile, coded: StaticFile) -> None:
        """``plain``'s entry becomes ``coded`` (its compressed copies) if they fit the cache."""
        extra = coded.size - plain.size
        if coded is plain or self._cache.get(path) is not plain or self._cached_bytes + extra > MAX_CACHE:
            return
        self._cache[path] = coded
        self._cached_bytes += extra
        for url, known in list(self._by_url.items()):
            if known is plain:
                self._by_url[url] = coded

    def _remember(self, url: bytes, entry: StaticFile) -> None:
        if len(self._by_url) < MAX_URLS:
            self._by_url[url] = entry

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes


def with_codings(entry: StaticFile, path: str, info: os.stat_result, room: int) -> StaticFile:
    """``entry`` with its compressed copies: fresh precompressed files beside ``path`` first,
    else compressed here (``STATIC_CODINGS``); a copy that saves nothing is not kept. Touches
    nothing shared: ``StaticFiles`` may run it in a thread."""
    codings: dict[str, tuple[bytes, bytes]] = {}
    for coding in PREFERENCE:
        found = read_regular(path + PRECOMPRESSED[coding])
        body = found[0] if found is not None and found[1].st_mtime_ns >= info.st_mtime_ns else None
        if body is None and coding in STATIC_CODINGS and len(entry.body) <= room:
            body = compress_static(entry.body, coding)
        if body is not None and len(body) < len(entry.body):
            codings[coding] = (body, coded_etag(entry.etag, coding))
    return replace(entry, codings=codings) if codings else entry


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
    "LONG_CACHE", "MAX_CACHE", "MAX_FILE", "PRECOMPRESSED", "Root", "SHORT_CACHE", "StaticFile", "StaticFiles",
    "bokeh_roots", "read_regular", "safe_relative", "with_codings",
]
