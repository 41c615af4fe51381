"""The compiled hot path (``balancer/_speedups.c``) against the Python rules it stands in for.

The C functions handle the common heads and decline (None) the rest; what they accept must come
out exactly as ``head.forward_request`` / ``head.response_head_raw`` build it, and a head the
Python rules refuse must never be accepted. Both paths run in the suite: the e2e proxy tests
below run again with ``FLEET_PURE_PYTHON=1`` (and everything else runs compiled, where built).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.balancer import head
from fleet.balancer.head import HeadError, Request, forward_request, response_head_raw
from fleet.balancer.trust import TrustedProxies
from support import run_without_the_compiled_path

ROOT = Path(__file__).resolve().parent.parent
NOBODY = TrustedProxies()
compiled = pytest.mark.skipif(head.SPEEDUPS is None, reason="fleet.balancer._speedups is not built here "
                              "(no C compiler at install, or FLEET_PURE_PYTHON=1); CI requires it")

NAMES = [b"Host", b"host", b"HOST", b"Cookie", b"cookie", b"Connection", b"connection", b"Origin",
         b"Upgrade", b"Transfer-Encoding", b"Content-Length", b"Keep-Alive", b"TE", b"Trailer",
         b"Proxy-Connection", b"X-Forwarded-For", b"x-forwarded-host", b"X-Forwarded-Proto", b"X-Real-IP",
         b"X-Forwarded-Port", b"X-Forwarded-Whatever", b"Forwarded", b"X-Scheme", b"close", b"Close",
         b"keep-alive", b"User-Agent", b"Accept", b"Accept-Encoding", b"If-None-Match", b"If-Modified-Since",
         b"Bokeh-Session-Id", b"Sec-WebSocket-Protocol", b"X-A", b"x" * 70, b"X-Forwarded-"]
VALUES = [b"", b"app.test", b"app.test:8080", b" app.test ", b"[::1]:80", b"bad host", b"a,b", b"keep-alive",
          b"close", b"Keep-Alive, close", b"upgrade", b"keep-alive, X-A", b"host", b"websocket", b"chunked",
          b"5", b"0", b"1, 1", b"fleet_affinity=g1w0", b"*/*", b"1.2.3.4", b"\"etag\"", b"x" * 300]
URLS = [b"/", b"/a?b=1", b"/?", b"/p?q?r", b"*", b"http://app.test/x", b"https://h:1/", b"x", b"//a"]
METHODS = [b"GET", b"HEAD", b"POST", b"OPTIONS", b"CONNECT", b"PUT"]
FIELDS = Request.__slots__


def python_head(method: bytes, url: bytes, http10: bool, keep_alive: bool,
                headers: list[tuple[bytes, bytes]]) -> Request | HeadError:
    try:
        return forward_request(method, url, http10, keep_alive, False, headers, b"10.1.2.3", b"http", NOBODY,
                               b"127.0.0.1:5006")
    except HeadError as error:
        return error


@compiled
@settings(max_examples=1500, deadline=None)
@given(method=st.sampled_from(METHODS), url=st.sampled_from(URLS), http10=st.booleans(), keep_alive=st.booleans(),
       headers=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))
@pytest.mark.slow
def test_an_accepted_request_head_is_the_python_one_and_no_refusal_is_accepted(
        method: bytes, url: bytes, http10: bool, keep_alive: bool, headers: list[tuple[bytes, bytes]]) -> None:
    expected = python_head(method, url, http10, keep_alive, headers)  # fills the Host cache first
    fast = head.FAST_REQUEST_HEAD(method, url, http10, keep_alive, headers, b"10.1.2.3", b"http",
                                  b"127.0.0.1:5006")
    if fast is None:
        return
    assert not isinstance(expected, HeadError), f"C accepted what Python refuses: {expected.reason}"
    assert {name: getattr(fast, name) for name in FIELDS} == {name: getattr(expected, name) for name in FIELDS}


@compiled
def test_what_browsers_send_takes_the_compiled_path() -> None:
    """A guard against a fast path that declines everything (and so does nothing)."""
    chrome = [(b"Host", b"app.test"), (b"Connection", b"keep-alive"), (b"User-Agent", b"Mozilla/5.0"),
              (b"Accept", b"text/html"), (b"Accept-Encoding", b"gzip"), (b"Cookie", b"fleet_affinity=g1w0"),
              (b"If-None-Match", b"\"x\"")]
    curl_10 = [(b"User-Agent", b"curl/8"), (b"Accept", b"*/*")]
    for method, url, http10, headers in [(b"GET", b"/?a=1", False, chrome), (b"HEAD", b"/", True, curl_10),
                                         (b"GET", b"/ws", False, [(b"Host", b"app.test"), (b"X-Forwarded-For", b"6.6.6.6")])]:
        expected = python_head(method, url, http10, True, headers)
        fast = head.FAST_REQUEST_HEAD(method, url, http10, True, headers, b"10.1.2.3", b"http", b"127.0.0.1:5006")
        assert fast is not None
        assert fast.forward == expected.forward  # type: ignore[union-attr]
    assert b"6.6.6.6" not in fast.forward  # a client's forwarding claim is dropped


@compiled
@pytest.mark.parametrize("headers", [
    [(b"Host", b"a"), (b"Host", b"b")],  # 400 from Python
    [(b"Host", b"bad host")],  # 400
    [(b"Connection", b"keep-alive")],  # HTTP/1.1 without Host: 400
    [(b"Host", b"a"), (b"Content-Length", b"1, 2")],  # 400
    [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")],  # smuggling
    [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")],
    [(b"Host", b"a"), (b"Connection", b"close, X-A"), (b"X-A", b"1")],
    [(b"Host", b"a")] * 2 + [(b"X-B", b"1")] * 300,
])
def test_the_compiled_path_declines_what_it_does_not_decide(headers: list[tuple[bytes, bytes]]) -> None:
    python_head(b"GET", b"/", False, True, headers)
    assert head.FAST_REQUEST_HEAD(b"GET", b"/", False, True, headers, b"10.1.2.3", b"http", b"h:1") is None


RAW_HEADS = [b"HTTP/1.1 200 OK\r\nContent-Length: 2", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain",
             b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0",
             b"HTTP/1.1 204 No Content\r\nServer: x", b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", b"HTTP/1.0 200 OK\r\nContent-Length: 1",
             b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 3",
             b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"]


@compiled
@settings(max_examples=600, deadline=None)
@given(raw=st.sampled_from(RAW_HEADS), head_request=st.booleans(), http10=st.booleans(), keep_alive=st.booleans(),
       cookie=st.sampled_from([None, b"Set-Cookie: fleet_affinity=g1w0; Path=/"]),
       extra=st.sampled_from([None, b"Strict-Transport-Security: max-age=60"]))
def test_a_cached_response_head_is_the_python_one(raw: bytes, head_request: bool, http10: bool, keep_alive: bool,
                                                  cookie: bytes | None, extra: bytes | None) -> None:
    status = int(raw[9:12])
    expected = response_head_raw(raw, status, head_request, http10, keep_alive, cookie, extra)  # caches it
    fast = head.FAST_RESPONSE_HEAD(raw, status, head_request, http10, keep_alive, cookie, extra)
    if status in (200, 404, 204, 304, 500) and raw.startswith(b"HTTP/1.1") and b"chunked" not in raw:
        assert fast is not None  # those are the heads the Python code caches
    if fast is not None:
        assert fast == expected


def test_ci_builds_the_compiled_module() -> None:
    """``make test`` in CI installs with a C compiler (.ci/run): there, a missing build is a failure."""
    if os.environ.get("FLEET_PURE_PYTHON") == "1":
        assert head.SPEEDUPS is None and head.HOT_PATH == "pure Python"
        return
    if head.SPEEDUPS is None and os.environ.get("CI") != "true":
        pytest.skip("fleet.balancer._speedups is not built here (no C compiler at install); in CI this fails")
    assert head.SPEEDUPS is not None, "fleet.balancer._speedups was not built (is gcc/python3-dev missing?)"
    assert head.HOT_PATH == "compiled"


def test_fleet_pure_python_forces_the_python_path() -> None:
    code = ("from fleet.balancer import head; from fleet.balancer.standalone import hot_path_line; "
            "print(head.HOT_PATH, head.FAST_REQUEST_HEAD, head.FAST_RESPONSE_HEAD); print(hot_path_line())")
    env = {**os.environ, "FLEET_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    first, banner = out.stdout.splitlines()
    assert first.split() == ["pure", "Python", "None", "None"]
    assert banner == "proxy hot path: pure Python (FLEET_PURE_PYTHON=1)"


@compiled
def test_the_start_up_banner_names_the_compiled_path() -> None:
    from fleet.balancer.standalone import hot_path_line

    assert hot_path_line() == "proxy hot path: compiled (fleet.balancer._speedups)"


@pytest.mark.slow(seconds=40)
@pytest.mark.skipif(os.environ.get("FLEET_PURE_PYTHON") == "1", reason="this run is the pure-Python one already")
def test_the_proxy_tests_pass_on_the_pure_python_path() -> None:
    """The head rules and the proxy end to end once more without the C code (the hardening tests
    too: tests/test_pure_python_hardening.py, a module of its own so that another test worker
    runs it at the same time)."""
    run_without_the_compiled_path("tests/test_balancer_head.py", "tests/test_balancer.py",
                                  "tests/test_edge_trust.py", "tests/test_speedups.py")
