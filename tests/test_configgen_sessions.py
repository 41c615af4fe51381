"""Bokeh session routing of ``fleet config haproxy|nginx``, run by the real servers.

A request that names a Bokeh session made by a fleet worker (id ``g<generation>w<i>-...``)
must reach slot ``w<i>`` whatever its cookie says: the WebSocket by the token BokehJS sends in
``Sec-WebSocket-Protocol: bokeh, <token>`` (made here by Bokeh's own ``generate_jwt_token``),
autoload.js and pulled sessions by the ``Bokeh-Session-Id`` header or the ``bokeh-session-id``
argument. The workers are ``examples/tornado_hello.py`` (``fleet up --no-proxy -n 3``), which
answer with their worker id. Also the encoding argument itself: the nginx regexes match real
tokens of every slot and generation length, and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
import websocket

from fleet.configgen.session_routing import encode_classes, token_slot_regex
from support import free_port
from test_configgen_servers import TORNADO_APP, fleet_config, get, running, worker_of
from up_helpers import Fleet, workers_without_proxy

pytestmark = pytest.mark.timeout(180)

ROUTING_SERVERS = ("nginx", "haproxy", "apache")
WORKERS = 3
_RANDOM = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789aBcDeF"


def token_for(session_id: str, big: bool = False) -> str:
    """A Bokeh session token, as the worker hands it to BokehJS (optionally with the compressed
    headers and cookies Bokeh puts in it, which make it long)."""
    from bokeh.util.token import generate_jwt_token

    extra = {"headers": {"cookie": "x" * 3000, "user-agent": "test"}, "cookies": {"a": "b"}} if big else None
    return generate_jwt_token(session_id, extra_payload=extra)


def slot_of(worker: str) -> str:
    match = re.fullmatch(r"g\d+(w\d+)", worker)
    assert match, worker
    return match.group(1)


# -- the encoding: pure, against Bokeh's own tokens -----------------------------------------

@pytest.mark.parametrize("generation", [1, 2, 9, 10, 57, 100, 123, 4567, 10000, 987654])
def test_token_regex_matches_exactly_its_slot_for_every_generation_length(generation: int) -> None:
    slots = [f"w{i}" for i in range(13)]
    patterns = {slot: re.compile(token_slot_regex(slot)) for slot in slots}
    for index in range(13):
        for signed_tail, big in (("", False), (".c2lnbmF0dXJl", True)):
            session_id = f"g{generation}w{index}-{_RANDOM}{signed_tail}"
            token = token_for(session_id, big)
            assert [slot for slot, p in patterns.items() if p.match(token)] == [f"w{index}"], session_id


def test_token_regex_matches_no_foreign_or_malformed_id() -> None:
    patterns = [re.compile(token_slot_regex(f"w{i}")) for i in range(13)]
    for session_id in ("external-signed-id", "w1-abc", "g0w1-abc", "gw1-abc", "g1w-abc", "g1w1abc",
                       "g1x1-abc", "G1w1-abc", "g1w1", "xg1w1-abc", _RANDOM):
        token = token_for(session_id)
        assert not [p.pattern for p in patterns if p.match(token)], session_id


def test_the_id_is_matchable_only_because_its_offset_is_fixed() -> None:
    """The argument the nginx route rests on. base64 turns 3 bytes into 4 characters, so how
    ``g1w0-`` is spelled depends on its offset mod 3: the same id after a prefix one or two
    bytes longer shares no character run with it. Bokeh's prefix is always the 16 bytes
    ``{"session_id": "``, so the spelling is fixed, and a regex per slot can match it."""
    import base64

    spellings = set()
    for prefix in (b'{"session_id": "', b'{"session_id":  "', b'{"session_id":   "'):
        encoded = base64.urlsafe_b64encode(prefix + b"g1w0-AAAA").decode()
        start = len(prefix) * 4 // 3 + 1  # the first character holding only bits of the id
        spellings.add(encoded[start:start + 5])
    assert len(spellings) == 3, spellings
    classes = [frozenset([b]) for b in b'{"session_id": "g1w0-']
    token = base64.urlsafe_b64encode(b'{"session_id": "g1w0-AAAA"}').decode()
    assert re.match(encode_classes(classes), token)


# -- the real servers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with workers_without_proxy(tmp_path_factory.mktemp("fleet"), TORNADO_APP, workers=WORKERS) as fleet:
        yield fleet


def websocket_worker(port: int, headers: list[str], cookie: str | None = None) -> str:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5, header=headers, cookie=cookie)
    try:
        ws.send("who")
        answer = ws.recv()
    finally:
        ws.close()
    assert isinstance(answer, str) and answer.endswith(": who"), answer
    return answer.split(":", 1)[0]


@pytest.mark.parametrize("kind", ROUTING_SERVERS)
def test_a_request_naming_a_session_reaches_the_worker_that_made_it(
        kind: str, workers: Fleet, tmp_path: Path) -> None:
    port = free_port()

    def cookie(slot: str) -> str:  # Apache's route follows a dot
        return f"fleet_affinity={'.' if kind == 'apache' else ''}{slot}"

    with running(kind, tmp_path, fleet_config(workers, port)):
        for index in range(WORKERS):
            slot = f"w{index}"
            wrong = f"w{(index + 1) % WORKERS}"  # a cookie for another worker loses to the session
            for generation in (1, 23, 456):
                session_id = f"g{generation}w{index}-{_RANDOM}"
                for big in (False, True):
                    protocol = f"Sec-WebSocket-Protocol: bokeh, {token_for(session_id, big)}"
                    worker = websocket_worker(port, [protocol], cookie=cookie(wrong))
                    assert slot_of(worker) == slot, (kind, session_id, big, worker)
                status, _, body = get(port, f"/?bokeh-session-id={session_id}&x=1",
                                      headers={"Cookie": cookie(wrong)})
                assert status == 200 and slot_of(worker_of(body)) == slot, (kind, session_id, body)
                status, _, body = get(port, "/", headers={"Bokeh-Session-Id": session_id,
                                                          "Cookie": cookie(wrong)})
                assert status == 200 and slot_of(worker_of(body)) == slot, (kind, session_id, body)

        # No session named, or one no worker here made: the cookie still pins, then least conns.
        for foreign in ("external-abc", "g1w9-abc"):
            protocol = f"Sec-WebSocket-Protocol: bokeh, {token_for(foreign)}"
            worker = websocket_worker(port, [protocol], cookie=cookie("w2"))
            assert slot_of(worker) == "w2", (kind, foreign, worker)
        status, _, body = get(port, "/?bokeh-session-id=g1w1-abc", headers={"Cookie": cookie("w2")})
        assert slot_of(worker_of(body)) == "w1"
        # An undecodable token names no session: served, by the cookie's worker.
        worker = websocket_worker(port, ["Sec-WebSocket-Protocol: bokeh, !!not-base64!!"],
                                  cookie=cookie("w0"))
        assert slot_of(worker) == "w0"
        seen = {slot_of(worker_of(get(port)[2])) for _ in range(12)}
        assert len(seen) > 1, seen  # no session, no cookie: spread, not pinned


@pytest.mark.parametrize("kind", ROUTING_SERVERS)
def test_no_session_routing_where_an_id_names_no_slot(kind: str) -> None:
    """``--upstream`` hosts each have their own ``g1w0``, ``--no-sticky`` asks for no affinity
    and one worker needs none: the files then carry no session rule at all."""
    from fleet.configgen import Deployment, render

    target = Deployment(fleet_executable="/usr/local/bin/fleet", working_directory="/srv/fleet")
    assert "bokeh-session-id" in render(kind, fleet_config(None, 8080), target)
    for options in ({"upstream": ("10.0.0.5:5100", "10.0.0.6:5100")}, {"sticky": False}, {"workers": "1"}):
        assert "bokeh-session-id" not in render(kind, fleet_config(None, 8080, **options), target), options
