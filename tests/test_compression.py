"""Content codings, pure: the q-value choice, which responses are compressed, the rewritten
worker head, the streaming encoders, and the static files' copies, Range and 304 (tmp files)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from fleet.balancer import compressor
from fleet.balancer.encoding import (
    IDENTITY, choose, coded_etag, compressed_head, compressible, parse_accept, worker_fields, worth_compressing,
)
from fleet.balancer.static_answer import UNSATISFIABLE, byte_range, static_answer
from fleet.balancer.static_files import MAX_CACHE, StaticFiles, bokeh_roots

ALL = ("zstd", "br", "gzip")


@pytest.mark.parametrize(("accept", "offered", "expected"), [
    (None, ALL, IDENTITY),  # no header: identity, as nginx and Caddy
    (b"", ALL, IDENTITY),
    (b"gzip", ALL, "gzip"),
    (b"GZIP", ALL, "gzip"),
    (b"x-gzip", ALL, "gzip"),
    (b"br", ALL, "br"),
    (b"zstd", ALL, "zstd"),
    (b"gzip, deflate, br, zstd", ALL, "zstd"),  # Chromium: a tie goes to the proxy's order
    (b"gzip, deflate, br, zstd", ("br", "gzip"), "br"),
    (b"gzip;q=1.0, br;q=0.5", ALL, "gzip"),
    (b"br;q=0.9, gzip", ALL, "gzip"),
    (b"gzip;q=0.5, br;q=0", ALL, "gzip"),
    (b"gzip;q=0", ALL, IDENTITY),
    (b"gzip;q=0.000", ALL, IDENTITY),
    (b"*", ALL, "zstd"),
    (b"*;q=0", ALL, IDENTITY),
    (b"*;q=0.1, gzip;q=0.5", ALL, "gzip"),
    (b"br;q=0, *", ALL, "zstd"),
    (b"zstd;q=0, *;q=0.3", ALL, "br"),
    (b"identity", ALL, IDENTITY),
    (b"identity;q=1, gzip;q=0.5", ALL, IDENTITY),  # identity named higher wins
    (b"identity;q=0.5, gzip", ALL, "gzip"),
    (b"deflate", ALL, IDENTITY),  # not offered
    (b"gzip;q=2", ALL, IDENTITY),  # a malformed q refuses, never guesses
    (b"gzip;q=abc, br", ALL, "br"),
    (b"gzip;q=-1", ALL, IDENTITY),
    (b"gzip;q=0.5;level=1", ALL, "gzip"),
    (b" , ,gzip ,, ", ALL, "gzip"),
    (b"gzip, gzip;q=0", ALL, "gzip"),  # the first one counts
    (b"br", (), IDENTITY),
])
def test_the_coding_is_chosen_by_q_value(accept: bytes | None, offered: tuple[str, ...], expected: str) -> None:
    assert choose(accept, offered) == expected


@given(st.binary(max_size=300))
def test_any_accept_encoding_gives_an_offered_coding_or_identity(value: bytes) -> None:
    assert choose(value, ALL) in ALL + (IDENTITY,)
    assert all(0.0 <= q <= 1.0 for q in parse_accept(value).values())


def test_a_long_accept_encoding_is_bounded() -> None:
    value = b"a, " * 100_000 + b"gzip"
    assert choose(value, ALL) == IDENTITY  # past MAX_ELEMENTS: ignored


@pytest.mark.parametrize(("content_type", "expected"), [
    (b"text/html; charset=utf-8", True), (b"text/plain", True), (b"TEXT/CSS", True),
    (b"application/json", True), (b"application/vnd.api+json", True), (b"text/javascript", True),
    (b"application/javascript; charset=utf-8", True), (b"image/svg+xml", True), (b"application/xml", True),
    (b"text/event-stream", False), (b"Text/Event-Stream; charset=utf-8", False), (b"image/png", False),
    (b"application/octet-stream", False), (b"", False), (None, False), (b"font/woff2", False),
])
def test_compressible_types(content_type: bytes | None, expected: bool) -> None:
    assert compressible(content_type) is expected


HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4096\r\nETag: \"abc\"\r\n"
        b"Accept-Ranges: bytes\r\nX-Other: 1")


def test_which_worker_responses_are_compressed() -> None:
    fields = worker_fields(HEAD)
    assert worth_compressing(200, fields)
    assert worth_compressing(404, fields)
    for status in (101, 204, 206, 304):
        assert not worth_compressing(status, fields)
    assert not worth_compressing(200, worker_fields(HEAD + b"\r\nContent-Encoding: gzip"))
    assert not worth_compressing(200, worker_fields(HEAD + b"\r\nCache-Control: public, No-Transform"))
    assert not worth_compressing(200, worker_fields(HEAD.replace(b"4096", b"100")))  # under MIN_SIZE
    assert not worth_compressing(200, worker_fields(HEAD.replace(b"text/html", b"text/event-stream")))
    assert worth_compressing(200, worker_fields(HEAD.replace(b"Content-Length: 4096\r\n", b"")))  # unknown length


def test_the_compressed_head_drops_the_length_names_the_coding_and_weakens_the_etag() -> None:
    head = compressed_head(HEAD, "br")
    assert b"Content-Length" not in head and b"Accept-Ranges" not in head
    assert b"\r\nETag: W/\"abc\"" in head and head.endswith(b"Content-Encoding: br\r\nVary: Accept-Encoding")
    varied = compressed_head(HEAD + b"\r\nVary: Cookie", "gzip")
    assert b"Vary: Cookie, Accept-Encoding" in varied and varied.count(b"Vary") == 1
    assert compressed_head(HEAD + b"\r\nVary: accept-encoding", "gzip").count(b"Accept-Encoding") == 0
    assert b"Vary: *\r\n" in compressed_head(HEAD + b"\r\nVary: *", "gzip") + b"\r\n"
    assert b'W/"weak"' in compressed_head(HEAD.replace(b'"abc"', b'W/"weak"'), "gzip")


def _decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return compressor.brotli.decompress(data)  # type: ignore[union-attr]
    return compressor.zstandard.ZstdDecompressor().decompressobj().decompress(data)  # type: ignore[union-attr]


@pytest.mark.parametrize("coding", compressor.STREAM_CODINGS)
def test_a_stream_decodes_after_every_flush_and_whole_at_the_end(coding: str) -> None:
    encoder = compressor.stream_encoder(coding)
    pieces = [b"line %d of the stream\n" % n * 50 for n in range(20)]
    out = b""
    for index, piece in enumerate(pieces):
        out += encoder.compress(piece)
        out += encoder.flush()
        if coding == "gzip":  # what was flushed decodes now: nothing held back
            assert zlib.decompressobj(31).decompress(out) == b"".join(pieces[:index + 1])
    out += encoder.finish()
    assert _decode(coding, out) == b"".join(pieces)
    assert encoder.bytes_in == sum(map(len, pieces)) and encoder.bytes_out == len(out)


def tree(tmp_path: Path) -> tuple[StaticFiles, Path]:
    static = tmp_path / "bokeh_static"
    (static / "js").mkdir(parents=True)
    (static / "js" / "bokeh.min.js").write_bytes(b"function f(x){return x+1};\n" * 2000)
    (static / "js" / "tiny.js").write_bytes(b"f();")
    (static / "img.png").write_bytes(bytes(range(256)) * 20)
    return StaticFiles(bokeh_roots(None, str(static), [])), static


def request(**fields: bytes | None) -> SimpleNamespace:
    base: dict[str, bytes | None] = dict(method=b"GET", accept_encoding=None, range=None, if_range=None,
                                         if_none_match=None, if_modified_since=None)
    base.update(fields)
    return SimpleNamespace(**base)


def test_static_copies_are_made_once_and_counted_in_the_cache(tmp_path: Path) -> None:
    files, _ = tree(tmp_path)
    entry = files.lookup(*files.root_for(b"/static/js/bokeh.min.js"))  # type: ignore[misc]
    assert entry is not None and set(entry.codings) == set(compressor.STATIC_CODINGS)
    for coding, (body, etag) in entry.codings.items():
        assert _decode(coding, body) == entry.body and etag == coded_etag(entry.etag, coding) != entry.etag
    assert files.cached_bytes == entry.size > len(entry.body)
    assert files.lookup(*files.root_for(b"/static/js/bokeh.min.js")) is entry  # once  # type: ignore[misc]
    for small in (b"/static/js/tiny.js", b"/static/img.png"):  # too small, not text: plain only
        assert not files.lookup(*files.root_for(small)).codings  # type: ignore[misc,union-attr]
    assert MAX_CACHE > files.cached_bytes


def test_precompressed_files_beside_the_original_are_used_when_fresh(tmp_path: Path) -> None:
    files, static = tree(tmp_path)
    original = static / "js" / "bokeh.min.js"
    (static / "js" / "bokeh.min.js.gz").write_bytes(gzip.compress(original.read_bytes(), 9, mtime=0))
    stale = static / "js" / "bokeh.min.js.br"
    stale.write_bytes(b"stale")
    import os
    os.utime(stale, ns=(1, 1))  # older than the original: ignored
    entry = files.lookup(*files.root_for(b"/static/js/bokeh.min.js"))  # type: ignore[misc]
    assert entry is not None
    assert entry.codings["gzip"][0] == (static / "js" / "bokeh.min.js.gz").read_bytes()
    if "br" in entry.codings:
        assert entry.codings["br"][0] != b"stale"


def test_static_answers_by_coding_with_vary_etag_304_head_and_range(tmp_path: Path) -> None:
    files, _ = tree(tmp_path)
    entry = files.lookup(*files.root_for(b"/static/js/bokeh.min.js"))  # type: ignore[misc]
    assert entry is not None
    status, plain = static_answer(entry, request(), versioned=False, keep_alive=True)  # type: ignore[arg-type]
    assert status == 200 and plain.endswith(entry.body) and b"Vary: Accept-Encoding" in plain
    assert b"Content-Encoding" not in plain and b"Accept-Ranges: bytes" in plain
    status, zipped = static_answer(entry, request(accept_encoding=b"gzip"), versioned=True,  # type: ignore[arg-type]
                                   keep_alive=True)
    gz_body, gz_tag = entry.codings["gzip"]
    assert zipped.endswith(gz_body) and b"Content-Encoding: gzip" in zipped and b"ETag: " + gz_tag in zipped
    assert b"Content-Length: %d" % len(gz_body) in zipped
    status, head = static_answer(entry, request(method=b"HEAD", accept_encoding=b"gzip"), versioned=True,  # type: ignore[arg-type]
                                 keep_alive=True)
    assert status == 200 and head.endswith(b"\r\n\r\n") and b"Content-Length: %d" % len(gz_body) in head
    # 304 for the copy the client would get, not for another one's tag
    assert static_answer(entry, request(accept_encoding=b"gzip", if_none_match=gz_tag),  # type: ignore[arg-type]
                         versioned=True, keep_alive=True)[0] == 304
    assert static_answer(entry, request(accept_encoding=b"identity", if_none_match=gz_tag),  # type: ignore[arg-type]
                         versioned=True, keep_alive=True)[0] == 200
    # Range: the plain bytes, whatever the client accepts
    status, part = static_answer(entry, request(accept_encoding=b"gzip", range=b"bytes=10-19"),  # type: ignore[arg-type]
                                 versioned=True, keep_alive=True)
    assert status == 206 and part.endswith(b"\r\n\r\n" + entry.body[10:20])
    assert b"Content-Range: bytes 10-19/%d" % len(entry.body) in part and b"Content-Encoding" not in part
    assert static_answer(entry, request(range=b"bytes=%d-" % len(entry.body)),  # type: ignore[arg-type]
                         versioned=True, keep_alive=True)[0] == 416
    assert static_answer(entry, request(range=b"bytes=0-1", if_range=b'"other"'),  # type: ignore[arg-type]
                         versioned=True, keep_alive=True)[0] == 200
    assert static_answer(entry, request(range=b"bytes=0-1", if_range=entry.etag),  # type: ignore[arg-type]
                         versioned=True, keep_alive=True)[0] == 206


@pytest.mark.parametrize(("value", "expected"), [
    (b"bytes=0-9", (0, 9)), (b"bytes=5-", (5, 99)), (b"bytes=-10", (90, 99)), (b"bytes=-1000", (0, 99)),
    (b"bytes=90-1000", (90, 99)), (b"bytes=100-", UNSATISFIABLE), (b"bytes=-0", UNSATISFIABLE),
    (b"bytes=0-1,5-6", None), (b"items=0-1", None), (b"bytes=9-0", None), (b"bytes=a-b", None), (b"bytes=-", None),
    (b"bytes=" + b"9" * 40 + b"-", None), (b"Bytes = 1-2", (1, 2)),
])
def test_byte_ranges(value: bytes, expected: object) -> None:
    assert byte_range(value, 100) == expected


def test_copies_are_made_in_a_thread_and_replace_the_plain_entry_when_done(tmp_path: Path) -> None:
    import asyncio

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        files = StaticFiles(tree(tmp_path)[0].roots, offload=lambda work: loop.run_in_executor(None, work))
        found = files.root_for(b"/static/js/bokeh.min.js")
        assert found is not None
        plain = files.lookup(*found)
        assert plain is not None and not plain.codings
        making = files.pending(plain)
        assert making is not None
        await making  # type: ignore[misc]
        await asyncio.sleep(0)  # the done callbacks run in the loop
        coded = files.lookup(*found)
        assert coded is not None and coded is not plain and set(coded.codings) == set(compressor.STATIC_CODINGS)
        assert files.pending(coded) is None and files.pending(plain) is None
        assert files.cached_bytes == coded.size

    asyncio.run(scenario())
