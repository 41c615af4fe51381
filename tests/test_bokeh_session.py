"""Reading the Bokeh session a request names, and the worker it belongs to (pure)."""

from __future__ import annotations

import base64
import json
from collections import Counter

from hypothesis import given, strategies as st

from fleet.balancer.bokeh_session import (
    maker_of,
    rendezvous,
    session_id_from_protocols,
    session_id_from_query,
    session_id_from_token,
    session_id_of,
    worker_for_session,
)


def bokeh_token(session_id: str, signed: bool = True) -> str:
    from bokeh.util.token import generate_jwt_token

    return generate_jwt_token(session_id, secret_key=b"k" * 32, signed=signed,
                              extra_payload={"headers": {"Cookie": "x" * 20000}})


def test_bokehs_own_tokens_are_read_signed_or_not() -> None:
    for signed in (True, False):
        token = bokeh_token("g3w1-abc", signed)
        assert session_id_from_token(token) == "g3w1-abc"
        assert session_id_from_protocols(b"bokeh, " + token.encode()) == "g3w1-abc"


def test_bad_tokens_name_no_session() -> None:
    not_json = base64.urlsafe_b64encode(b"not json").rstrip(b"=")
    no_id = base64.urlsafe_b64encode(json.dumps({"x": 1}).encode()).rstrip(b"=")
    number_id = base64.urlsafe_b64encode(json.dumps({"session_id": 5}).encode()).rstrip(b"=")
    for token in (b"", b"!!!", b"%%%.sig", not_json, no_id, number_id, b"a" * 10):
        assert session_id_from_token(token) is None, token
    assert session_id_from_protocols(b"bokeh") is None
    assert session_id_from_protocols(b"chat, " + bokeh_token("x").encode()) is None


@given(st.binary(max_size=300))
def test_any_bytes_in_the_protocol_header_never_raise(data: bytes) -> None:
    session_id_from_protocols(b"bokeh, " + data)
    session_id_from_query(data)


def test_query_and_header_forms() -> None:
    assert session_id_from_query(b"bokeh-session-id=w2-xyz&other=1") == "w2-xyz"
    token = bokeh_token("w0-q").encode()
    assert session_id_from_query(b"bokeh-autoload-element=1&bokeh-token=" + token) == "w0-q"
    assert session_id_from_query(b"bokeh-absolute-url=x") is None
    assert session_id_of(None, b"w1-h", b"") == "w1-h"
    # the WebSocket's token wins over the others, an undecodable one falls through
    assert session_id_of(b"bokeh, " + token, b"w1-h", b"") == "w0-q"
    assert session_id_of(b"bokeh, garbage", None, b"bokeh-session-id=w9-z") == "w9-z"
    assert session_id_of(b"bokeh, garbage", None, b"") is None


def test_worker_made_ids_go_to_their_maker_while_it_is_available() -> None:
    known = ["g1w0", "g1w1", "g2w1", "g1w10"]
    assert maker_of("g1w1-abc", known) == "g1w1"
    assert maker_of("g1w10-abc", known) == "g1w10"
    assert maker_of("external-abc", known) is None
    assert worker_for_session("g1w1-abc", known, ["g1w0", "g1w1"]) == "g1w1"
    gone = worker_for_session("g1w1-abc", known, ["g1w0", "g2w1"])  # its maker left
    assert gone in {"g1w0", "g2w1"} and gone == rendezvous("g1w1-abc", ["g1w0", "g2w1"])
    assert worker_for_session("x", known, []) is None


@given(st.text(min_size=1, max_size=60), st.lists(st.sampled_from([f"w{i}" for i in range(8)]),
                                                   min_size=2, max_size=8, unique=True))
def test_rendezvous_moves_only_the_sessions_of_a_worker_that_leaves(session_id: str, workers: list[str]) -> None:
    chosen = rendezvous(session_id, workers)
    assert chosen in workers
    assert rendezvous(session_id, list(reversed(workers))) == chosen  # order does not matter
    leaving = workers[0]
    after = rendezvous(session_id, workers[1:])
    assert after == chosen or chosen == leaving


def test_rendezvous_spreads_outside_ids_evenly() -> None:
    counts = Counter(rendezvous(f"external-{n}", ["w0", "w1", "w2"]) for n in range(3000))
    assert all(800 < counts[w] < 1200 for w in ("w0", "w1", "w2")), counts
