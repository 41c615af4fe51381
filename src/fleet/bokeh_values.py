"""Values of ``bokeh serve``'s options as fleet parses them, in Bokeh's units (pure).

Milliseconds stay milliseconds (``--keep-alive 37000``): a bare number elsewhere in fleet is
seconds, so these take whole numbers only, never a unit suffix that would hide the mix-up.
"""

from __future__ import annotations

import os
import re

from fleet.values import parse_url_path

SESSION_ID_MODES = ("unsigned", "signed", "external-signed")


def parse_prefix(value: str) -> str | None:
    """``dash``, ``/dash`` or ``/dash/`` -> ``/dash`` (what Bokeh's Server makes of them)."""
    text = str(value).strip().strip("/")
    if not text:
        return None
    # Every generated configuration writes it (nginx location, Apache Alias, the affinity
    # cookie's Path): an RFC 3986 path, without %XX escapes (Bokeh compares it with the decoded
    # path) and without ';' (it would end the cookie's Path attribute).
    prefix = parse_url_path("/" + text, "a URL prefix")
    bad = next((ch for ch in text if ch in "%;"), None)
    if bad is not None or ".." in text.split("/"):
        raise ValueError(f"not a URL prefix: {value!r}" + (f" has {bad!r}" if bad else " has a '..' segment")
                         + " (use e.g. /dash)")
    return prefix


def parse_milliseconds(value: str | int) -> int:
    """A whole number of milliseconds, as ``bokeh serve`` takes it (no unit suffix)."""
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"not a whole number of milliseconds: {value!r} (Bokeh's unit; e.g. 37000)")
    return int(text)


def parse_whole_seconds(value: str | int) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ValueError(f"not a whole number of seconds, at least 1: {value!r}")
    return int(text)


def parse_session_ids(value: str) -> str:
    mode = str(value).strip().lower()
    if mode not in SESSION_ID_MODES:
        raise ValueError(f"not a session-id mode: {value!r} (one of {', '.join(SESSION_ID_MODES)})")
    return mode


def parse_existing_file(value: str) -> str:
    """An absolute path, so every worker finds the file whatever its directory."""
    path = os.path.abspath(os.path.expanduser(str(value)))
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {value!r}")
    return path


def parse_num_threads(value: str | int) -> int:
    """Panel's --num-threads: 0 (one per CPU, Panel's meaning) up to 256."""
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--num-threads must be a whole number, not {value!r}") from None
    if not 0 <= threads <= 256:
        raise ValueError(f"--num-threads must be 0 (one per CPU) to 256, not {threads}")
    return threads


def parse_num_procs(value: str | int) -> int:
    number = int(value)
    if number != 1:
        raise ValueError(
            f"{value}: fleet does not fork Bokeh servers; each worker is one process. "
            f"Use -n/--workers N for N worker processes (the default is one per CPU)"
        )
    return number


__all__ = [
    "SESSION_ID_MODES", "parse_existing_file", "parse_milliseconds", "parse_num_procs", "parse_num_threads", "parse_prefix",
    "parse_session_ids", "parse_whole_seconds",
]
