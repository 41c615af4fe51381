"""The HTTP->HTTPS redirect answers (pure; the listener itself is tested in test_edge_tls.py)."""

from __future__ import annotations

from fleet.balancer.allow import Allowlist
from fleet.balancer.redirect import redirect_answer

ANY = Allowlist([])


def status_and_location(answer: bytes) -> tuple[int, bytes | None]:
    lines = answer.split(b"\r\n")
    location = next((line[10:] for line in lines if line.startswith(b"Location: ")), None)
    return int(lines[0].split()[1]), location


def test_get_is_301_and_other_methods_308_to_the_hosts_name_on_the_https_port() -> None:
    assert status_and_location(redirect_answer(b"GET /a?b HTTP/1.1\r\nHost: App.Test:8080", 443, ANY)) == (
        301, b"https://app.test/a?b")
    assert status_and_location(redirect_answer(b"POST /f HTTP/1.1\r\nHost: app.test", 8443, ANY)) == (
        308, b"https://app.test:8443/f")
    assert status_and_location(redirect_answer(b"GET http://x.test/p HTTP/1.1\r\nHost: app.test", 443, ANY)) == (
        301, b"https://x.test/p")
    assert status_and_location(redirect_answer(b"OPTIONS * HTTP/1.1\r\nhost: [::1]:80", 443, ANY)) == (
        308, b"https://[::1]/")


def test_only_allowed_hosts_are_redirected() -> None:
    allowed = Allowlist(["app.test"])  # the https side on 443: Host "app.test"
    assert status_and_location(redirect_answer(b"GET / HTTP/1.1\r\nHost: app.test:80", 443, allowed))[0] == 301
    assert status_and_location(redirect_answer(b"GET / HTTP/1.1\r\nHost: evil.test", 443, allowed)) == (421, None)
    assert status_and_location(redirect_answer(b"GET / HTTP/1.1\r\nHost: app.test", 8443, allowed)) == (421, None)


def test_bad_heads_are_400_and_never_echo_input_into_a_header() -> None:
    for head in (b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", b"GET /\r\nHost: a",
                 b"GET x HTTP/1.1\r\nHost: a", b"GET / HTTP/1.1\r\nHost: a b", b"GET / HTTP/2.0\r\nHost: a",
                 b"GET /\x7f HTTP/1.1\r\nHost: a", b"GET http://u@a/ HTTP/1.1\r\nHost: a",
                 b"GET / HTTP/1.1\r\nHost: a\r\nLocation: x"[:0] + b"GET /%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: a"):
        status, location = status_and_location(redirect_answer(head, 443, ANY))
        if status == 301:
            assert location is not None and b"\r" not in location and b"\n" not in location
        else:
            assert status == 400, head
