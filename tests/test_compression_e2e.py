"""Compression on a real fleet: worker responses (``--compress``) and the static files the proxy
serves itself, over real sockets; a 200 MB worker body streamed through with the proxy's
memory measured."""

from __future__ import annotations

import gzip
import http.client
import shutil
import socket
import threading
import zlib
from pathlib import Path

import psutil
import pytest

from fleet.balancer import compressor
from support import free_port, free_port_range, start_fleet
from up_helpers import Fleet, up

APPS = Path(__file__).resolve().parent / "apps"
APP = str(APPS / "compressible.py")
ALL = "gzip, deflate, br, zstd"  # what Chromium sends


def fetch(port: int, path: str, accept: str | None = None, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, lowercase headers, body as sent: not decoded)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = dict(headers or {})
    if accept is not None:
        sent["Accept-Encoding"] = accept
    conn.request(method, path, headers=sent)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def decode(coding: str | None, body: bytes) -> bytes:
    if coding is None:
        return body
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return compressor.brotli.decompress(body)  # type: ignore[union-attr]
    assert coding == "zstd"
    return compressor.zstandard.ZstdDecompressor().decompressobj().decompress(body)  # type: ignore[union-attr]


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.fixture(scope="module")
def worker_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    fleet = up(tmp_path_factory.mktemp("compress"), APP, workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        yield fleet


@pytest.mark.parametrize(("accept", "expected"), [
    (ALL, compressor.STREAM_CODINGS[0]), ("gzip", "gzip"), ("gzip;q=0.5, br;q=0.9", "br" if compressor.brotli else "gzip"),
    ("zstd;q=0.1, gzip;q=0.2", "gzip"), ("*", compressor.STREAM_CODINGS[0]), ("*;q=0", None), ("identity", None),
    ("gzip;q=0", None), (None, None), ("deflate", None),
])
def test_worker_responses_are_compressed_by_q_value(worker_fleet: Fleet, accept: str | None, expected: str | None) -> None:
    plain_status, plain_headers, plain = fetch(worker_fleet.port, "/text?kb=64")
    assert plain_status == 200 and len(plain) == 65536 and plain_headers["etag"] == '"text-65536"'
    status, headers, body = fetch(worker_fleet.port, "/text?kb=64", accept)
    assert status == 200
    assert headers.get("content-encoding") == expected
    assert decode(expected, body) == plain
    if expected is not None:
        assert headers["vary"] == "Accept-Encoding" and headers["etag"] == 'W/"text-65536"'
        assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
        assert len(body) < len(plain) / 4
    else:
        assert headers["content-length"] == "65536" and headers["etag"] == '"text-65536"'


@pytest.mark.parametrize("path", ["/encoded", "/events", "/small", "/png", "/notransform"])
def test_what_is_not_compressed_goes_as_the_worker_sent_it(worker_fleet: Fleet, path: str) -> None:
    _, plain_headers, plain = fetch(worker_fleet.port, path, "identity")
    _, headers, body = fetch(worker_fleet.port, path, ALL)
    assert headers.get("content-encoding") == plain_headers.get("content-encoding")
    if path == "/encoded":  # no double compression: the worker's gzip body, byte for byte
        assert headers["content-encoding"] == "gzip" and gzip.decompress(body).startswith(b"000000 GET")
    if path != "/png":
        assert body == plain
    assert "vary" not in headers


def test_an_existing_vary_is_extended_head_is_left_alone_and_http10_is_close_delimited(worker_fleet: Fleet) -> None:
    _, headers, _ = fetch(worker_fleet.port, "/vary", "gzip")
    assert headers["vary"] == "Cookie, Accept-Encoding" and headers["content-encoding"] == "gzip"
    status, headers, body = fetch(worker_fleet.port, "/text?kb=64", "gzip", method="HEAD")
    assert status == 200 and "content-encoding" not in headers and headers["content-length"] == "65536"
    answer = raw_exchange(worker_fleet.port, b"GET /text?kb=64 HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and b"Connection: close" in head
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert len(gzip.decompress(body)) == 65536
    # Pipelined: a compressed chunked answer, then a plain one, on one connection.
    answer = raw_exchange(worker_fleet.port, b"GET /text?kb=8 HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n"
                                             b"GET /small HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b"000060 GET"[:0] + answer[-60:])


def test_a_200_mb_worker_body_is_compressed_as_it_streams_in_bounded_memory(worker_fleet: Fleet) -> None:
    master = psutil.Process(worker_fleet.proc.pid)
    before = master.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], master.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPConnection("127.0.0.1", worker_fleet.port, timeout=60)
    conn.request("GET", "/stream?mb=200", headers={"Accept-Encoding": "gzip"})
    response = conn.getresponse()
    assert response.getheader("Content-Encoding") == "gzip" and response.getheader("Transfer-Encoding") == "chunked"
    decoder = zlib.decompressobj(31)
    plain = wire = 0
    first = b""
    try:
        while piece := response.read(256 * 1024):
            wire += len(piece)
            out = decoder.decompress(piece)
            if len(first) < 4096:
                first += out[:4096]
            plain += len(out)
        plain += len(decoder.flush())
    finally:
        done.set()
        sampler.join()
        conn.close()
    assert plain == 200 << 20 and decoder.eof and first.startswith(b"000000 GET /dashboard/plot?id=0")
    assert wire < plain / 4
    growth = peak[0] - before
    print(f"200 MiB gzip stream: {wire} bytes on the wire, proxy RSS grew {growth / 1e6:.1f} MB")
    assert growth < 48 << 20, f"the proxy grew by {growth} bytes: a body held whole?"


def test_no_compress_turns_worker_compression_off(tmp_path: Path) -> None:
    fleet = up(tmp_path, APP, "--no-compress", workers=1, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output(r"ready: open", timeout=60)
        _, headers, body = fetch(fleet.port, "/text?kb=64", ALL)
        assert "content-encoding" not in headers and len(body) == 65536


# -- the static files the proxy serves itself --------------------------------------------------
@pytest.fixture(scope="module")
def bokeh_fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    directory = tmp_path_factory.mktemp("compress-bokeh")
    app = directory / "gallery"
    shutil.copytree(APPS / "gallery", app)
    (app / "static" / "page.css").write_text("body { margin: 0 }\n" * 400)
    (app / "static" / "page.css.gz").write_bytes(gzip.compress((app / "static" / "page.css").read_bytes(), 9))
    base, port = free_port_range(1), free_port()
    control = str(directory / "fleet.sock")
    proc = start_fleet("up", str(app), "-n", "1", "--base-port", str(base), "--port", str(port),
                       "--control-socket", control, cwd=str(directory))
    with proc:
        proc.wait_for_output(r"ready: open http://localhost:\d+/", timeout=90)
        yield Fleet(proc, base, port, control)


BOKEH_JS = "/static/js/bokeh.min.js"
STATIC_BEST = "br" if compressor.brotli is not None else "gzip"


@pytest.mark.parametrize(("accept", "expected"), [
    (ALL, STATIC_BEST), ("gzip", "gzip"), ("br;q=0.5, gzip;q=0.6", "gzip"), ("gzip;q=0.5, br", STATIC_BEST),
    ("zstd", None), ("*;q=0", None), (None, None), ("identity;q=1, gzip;q=0.5", None), ("*", STATIC_BEST),
])
def test_static_files_are_chosen_by_q_value_with_vary_and_an_etag_each(bokeh_fleet: Fleet, accept: str | None,
                                                                      expected: str | None) -> None:
    status, plain_headers, plain = fetch(bokeh_fleet.port, BOKEH_JS)
    assert status == 200 and plain_headers["vary"] == "Accept-Encoding" and len(plain) > 100_000
    status, headers, body = fetch(bokeh_fleet.port, BOKEH_JS, accept)
    assert status == 200 and headers.get("content-encoding") == expected and headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) and decode(expected, body) == plain
    if expected is None:
        assert headers["etag"] == plain_headers["etag"]
        return
    assert headers["etag"] != plain_headers["etag"] and headers["etag"].endswith(f'-{expected}"')
    assert len(body) < len(plain) * 0.4
    # 304 for this copy's tag; HEAD gives the same head without the body
    status, _, body304 = fetch(bokeh_fleet.port, BOKEH_JS, accept, headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body304 == b""
    status, head_headers, head_body = fetch(bokeh_fleet.port, BOKEH_JS, accept, method="HEAD")
    assert status == 200 and head_body == b"" and head_headers["content-length"] == headers["content-length"]
    assert head_headers["content-encoding"] == expected


def test_static_ranges_are_of_the_plain_bytes_and_precompressed_files_are_served(bokeh_fleet: Fleet) -> None:
    _, _, plain = fetch(bokeh_fleet.port, BOKEH_JS)
    status, headers, body = fetch(bokeh_fleet.port, BOKEH_JS, ALL, headers={"Range": "bytes=100-199"})
    assert status == 206 and body == plain[100:200] and "content-encoding" not in headers
    assert headers["content-range"] == f"bytes 100-199/{len(plain)}"
    status, headers, _ = fetch(bokeh_fleet.port, BOKEH_JS, ALL, headers={"Range": f"bytes={len(plain)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(plain)}"
    css = "/gallery/static/page.css"
    status, headers, body = fetch(bokeh_fleet.port, css, "gzip")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"body { margin: 0 }\n" * 400
    # the file written beside it, not a copy made by the proxy (gzip -9 from this test, mtime inside)
    assert body[:4] == b"\x1f\x8b\x08\x00" and len(body) == len(gzip.compress(b"body { margin: 0 }\n" * 400, 9))
