"""The compressors: gzip (zlib, always there), brotli and zstd (``pip install
'fleet[compress]'``: the ``brotli`` and ``zstandard`` packages, used when installed).

Two uses, two settings (measured on BokehJS's five bundles, 3.93 MB, on the shared dev
machine; ``python bench/compression.py`` prints the table):

- **Static files** are compressed once, when first read, in the event loop: the level must
  bound that one-time pause. brotli quality 5 (0.27 of the size, ~190 ms for all five) beats
  gzip -9 (0.31) for less CPU; quality 11 would save 10% more but costs ~9 s, so it is left
  to precompressed ``.br`` files (``balancer.static_files`` reads them). gzip level 6 for the
  clients without brotli (level 9 saves 0.3% for 10% more CPU).
- **Worker responses** are compressed as they stream, for every request: CPU per byte
  matters most. zstd level 3 (0.30, ~130 MB/s) first, then brotli quality 4, then gzip level
  5 (Caddy's default). Windows are kept small (512 KiB) so that a stream costs at most about
  1 MiB of memory whatever its length.

BREACH (a secret recovered from the compressed length of responses that also reflect the
attacker's text): worker responses are compressed by default, as nginx and Caddy do; an app
whose page mixes a long-lived secret with reflected input sends ``Cache-Control: no-transform``
(left alone here) or fleet runs with ``--no-compress``. Bokeh's session token is new on every
page load, so the many responses with one secret that BREACH needs never exist (README,
"Compression and BREACH").

``Encoder`` is one response's stream: ``compress`` each piece as it is relayed (no copy of
the body is kept), ``flush`` when a read from the worker has been relayed (so a slow stream
is not held back in the compressor), ``finish`` at the end. Nothing here does I/O.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Callable

from fleet.balancer.encoding import IDENTITY, choose, compressed_head, worker_fields, worth_compressing
from fleet.balancer.response_rules import response_head_raw

if TYPE_CHECKING:
    from fleet.balancer.request_rules import Request

try:
    import brotli  # type: ignore[import-not-found,import-untyped]
except ImportError:  # an optional extra
    brotli = None
try:
    import zstandard  # type: ignore[import-not-found,import-untyped]
except ImportError:  # an optional extra
    zstandard = None

GZIP_STATIC_LEVEL = 6
BROTLI_STATIC_QUALITY = 5
GZIP_STREAM_LEVEL = 5
BROTLI_STREAM_QUALITY = 4
ZSTD_STREAM_LEVEL = 3
STREAM_WINDOW_LOG = 19  # 512 KiB: brotli's lgwin and zstd's window_log for a stream

# What the proxy offers, best first (``encoding.choose`` breaks ties in this order).
STATIC_CODINGS: tuple[str, ...] = (("br",) if brotli is not None else ()) + ("gzip",)
STREAM_CODINGS: tuple[str, ...] = (
    (("zstd",) if zstandard is not None else ()) + (("br",) if brotli is not None else ()) + ("gzip",))


def compress_static(data: bytes, coding: str) -> bytes:
    """``data`` compressed with ``coding`` at the static files' level (one shot)."""
    if coding == "gzip":
        gz = zlib.compressobj(GZIP_STATIC_LEVEL, zlib.DEFLATED, 31)
        return gz.compress(data) + gz.flush()
    if coding == "br" and brotli is not None:
        return bytes(brotli.compress(data, quality=BROTLI_STATIC_QUALITY))
    raise ValueError(f"no compressor for {coding!r}")


class Encoder:
    """One response body's compressor (``coding``: the Content-Encoding sent)."""

    __slots__ = ("coding", "_compress", "_flush", "_finish", "dirty", "bytes_in", "bytes_out")

    def __init__(self, coding: str, compress: Callable[[bytes], bytes], flush: Callable[[], bytes],
                 finish: Callable[[], bytes]) -> None:
        self.coding = coding
        self._compress = compress
        self._flush = flush
        self._finish = finish
        self.dirty = False  # input given since the last flush
        self.bytes_in = 0
        self.bytes_out = 0

    def compress(self, data: bytes) -> bytes:
        self.dirty = True
        self.bytes_in += len(data)
        out = self._compress(data)
        self.bytes_out += len(out)
        return out

    def flush(self) -> bytes:
        """What the compressor holds back, as decodable bytes (a sync flush)."""
        self.dirty = False
        out = self._flush()
        self.bytes_out += len(out)
        return out

    def finish(self) -> bytes:
        self.dirty = False
        out = self._finish()
        self.bytes_out += len(out)
        return out


def stream_encoder(coding: str) -> Encoder:
    """A streaming compressor for ``coding`` (one of ``STREAM_CODINGS``)."""
    if coding == "gzip":
        gz: Any = zlib.compressobj(GZIP_STREAM_LEVEL, zlib.DEFLATED, 31, 8)
        return Encoder(coding, gz.compress, lambda: gz.flush(zlib.Z_SYNC_FLUSH), gz.flush)
    if coding == "zstd" and zstandard is not None:
        params = zstandard.ZstdCompressionParameters.from_level(ZSTD_STREAM_LEVEL, window_log=STREAM_WINDOW_LOG)
        zs = zstandard.ZstdCompressor(compression_params=params).compressobj()
        return Encoder(coding, zs.compress, lambda: zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK),
                       lambda: zs.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
    if coding == "br" and brotli is not None:
        br = brotli.Compressor(quality=BROTLI_STREAM_QUALITY, lgwin=STREAM_WINDOW_LOG)
        return Encoder(coding, br.process, br.flush, br.finish)
    raise ValueError(f"no compressor for {coding!r}")




def compressed_answer(raw: bytes, status: int, request: "Request", keep_alive: bool, set_cookie: bytes | None,
                      extra: bytes | None) -> tuple[bytes, int, Encoder] | None:
    """The head a worker's response goes to the client with when its body is compressed (how
    that body is framed, and its compressor); None: it goes as it is. Only for a client whose
    ``Accept-Encoding`` takes one of ``STREAM_CODINGS``, a GET-like request (not HEAD, not an
    upgrade) and a response ``encoding.worth_compressing`` accepts. The worker's own framing
    (whether its body ends when it closes) is the caller's, from the plain head."""
    if request.method == b"HEAD" or request.websocket:
        return None
    coding = choose(request.accept_encoding, STREAM_CODINGS)
    if coding == IDENTITY:
        return None
    if not worth_compressing(status, worker_fields(raw)):
        return None
    head, framing, _ = response_head_raw(compressed_head(raw, coding), status, False, request.http10, keep_alive,
                                         set_cookie, extra)
    return head, framing, stream_encoder(coding)


__all__ = ["BROTLI_STATIC_QUALITY", "Encoder", "GZIP_STATIC_LEVEL", "STATIC_CODINGS", "STREAM_CODINGS",
           "compress_static", "compressed_answer", "stream_encoder"]
