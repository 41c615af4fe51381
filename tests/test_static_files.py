"""The proxy's static files: routes, path traversal, conditional requests (pure, on tmp files)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, strategies as st

from fleet.balancer.static_answer import not_modified, response_head
from fleet.balancer.static_files import LONG_CACHE, StaticFiles, bokeh_roots, safe_relative


def make_tree(tmp_path: Path) -> tuple[StaticFiles, Path]:
    bokeh = tmp_path / "bokeh_static"
    (bokeh / "js").mkdir(parents=True)
    (bokeh / "js" / "bokeh.min.js").write_text("console.log('bokeh')")
    (bokeh / "extensions").mkdir()
    (bokeh / "extensions" / "ext.js").write_text("ext")
    app = tmp_path / "gallery" / "static"
    app.mkdir(parents=True)
    (app / "hello.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", app / "link.txt")
    return StaticFiles(bokeh_roots("/dash", str(bokeh), [("gallery", str(app)), ("nodir", str(tmp_path / "x"))])), tmp_path


def serve(files: StaticFiles, path: bytes) -> bytes | None:
    found = files.root_for(path)
    if found is None:
        return None
    entry = files.lookup(*found)
    return entry.body if entry is not None else b"<404>"


def test_routes_under_the_prefix_and_extensions_stay_with_workers(tmp_path: Path) -> None:
    files, _ = make_tree(tmp_path)
    assert serve(files, b"/dash/static/js/bokeh.min.js") == b"console.log('bokeh')"
    assert serve(files, b"/dash/gallery/static/hello.txt") == b"hello"
    assert serve(files, b"/dash/static/extensions/ext.js") is None  # the workers' business
    assert serve(files, b"/static/js/bokeh.min.js") is None  # not under the prefix
    assert serve(files, b"/dash/nodir/static/a") is None  # no static/ directory: no route
    assert serve(files, b"/dash/static/js/missing.js") == b"<404>"


def test_traversal_and_odd_paths_are_refused(tmp_path: Path) -> None:
    files, _ = make_tree(tmp_path)
    for tail in (b"../secret.txt", b"%2e%2e/secret.txt", b"js/../../secret.txt", b"js//bokeh.min.js",
                 b"./js/bokeh.min.js", b"js\\bokeh.min.js", b"%00", b"%2fetc/passwd", b"",
                 b"js/%ff.js"):
        assert serve(files, b"/dash/static/" + tail) == b"<404>", tail
    assert serve(files, b"/dash/gallery/static/link.txt") == b"<404>"  # symlink out of the root
    assert serve(files, b"/dash/static/js") == b"<404>"  # a directory


@given(st.binary(max_size=40))
def test_safe_relative_never_allows_dot_dot(data: bytes) -> None:
    relative = safe_relative(data)
    if relative is not None:
        assert ".." not in relative.split("/") and not relative.startswith("/") and "\0" not in relative


def test_conditional_requests_and_heads(tmp_path: Path) -> None:
    files, _ = make_tree(tmp_path)
    entry = files.lookup(*files.root_for(b"/dash/static/js/bokeh.min.js"))  # type: ignore[misc]
    assert entry is not None
    assert not_modified(entry, entry.etag, None)
    assert not_modified(entry, b'"other", W/' + entry.etag, None)
    assert not not_modified(entry, b'"other"', entry.last_modified)  # If-None-Match decides
    assert not_modified(entry, None, entry.last_modified)
    assert not not_modified(entry, None, b"Thu, 01 Jan 1970 00:00:00 GMT")
    assert not not_modified(entry, None, b"garbage")
    head = response_head(entry, status=200, versioned=True, keep_alive=True)
    assert b"Content-Length: %d" % len(entry.body) in head and LONG_CACHE in head
    assert b"text/javascript" in head and head.endswith(b"\r\n\r\n")
    short = response_head(entry, status=304, versioned=False, keep_alive=False)
    assert short.startswith(b"HTTP/1.1 304") and b"Content-Length" not in short and b"immutable" not in short
