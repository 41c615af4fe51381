"""The parts of ``bokeh serve``'s command-line grammar that click cannot express (pure).

- ``--args ARGS...`` takes the rest of the line for the apps (argparse's ``nargs="..."``), so
  ``fleet up a.py b/ --args --flag x`` serves two apps that both see ``--flag x``. The older
  ``fleet up a.py -- --flag x`` still works the same way: whichever of ``--args`` and ``--``
  comes first ends fleet's part of the line.
- ``--include-headers A B`` (argparse's ``nargs="+"``) takes every following word up to the
  next option, exactly as greedy as Bokeh's own parser: ``bokeh serve --include-headers A
  app.py`` reads ``app.py`` as a header too. Put such options after the APPs.
"""

from __future__ import annotations

from typing import Sequence

APP_ARGS_MARKERS = ("--args", "--")
MULTI_VALUE_OPTIONS = frozenset({
    "--include-headers", "--exclude-headers", "--include-cookies", "--exclude-cookies",
})

# ``bokeh serve`` options that have no fleet counterpart, and what to do instead: a Bokeh
# user's command line must fail with the reason, not with click's bare "No such option".
NOT_APPLICABLE = {
    "--dev": "fleet runs production workers; for live reloading use `bokeh serve --dev`, "
             "and `fleet reload` to roll out new code",
    "--show": "open the URL fleet prints when it is ready",
    "--log-format": "fleet prefixes each worker's lines itself (w1:5101 | ...); use --log-dir for files",
    "--log-file": "use --log-dir DIR (one file per worker)",
    "--use-config": "put fleet settings in fleet.toml, Bokeh's own in BOKEH_* environment variables",
}


class NotApplicable(ValueError):
    """A ``bokeh serve`` option fleet does not take; the message says what to use instead."""


def refuse_not_applicable(args: Sequence[str]) -> None:
    for word in args:
        flag = word.partition("=")[0]
        if flag in NOT_APPLICABLE:
            raise NotApplicable(f"{flag} is a bokeh serve option fleet does not take: {NOT_APPLICABLE[flag]}")


def split_app_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(fleet's own words, the apps' arguments)."""
    for position, word in enumerate(args):
        if word in APP_ARGS_MARKERS:
            return list(args[:position]), list(args[position + 1:])
    return list(args), []


def expand_multi_value(args: Sequence[str]) -> list[str]:
    """``--include-headers A B`` -> ``--include-headers A --include-headers B``."""
    expanded: list[str] = []
    position = 0
    while position < len(args):
        word = args[position]
        position += 1
        flag, equals, inline = word.partition("=")
        if flag not in MULTI_VALUE_OPTIONS:
            expanded.append(word)
            continue
        values = [inline] if equals else []
        while position < len(args) and not args[position].startswith("-"):
            values.append(args[position])
            position += 1
        if not values:
            expanded.append(word)  # click reports the missing value
        for value in values:
            expanded += [flag, value]
    return expanded


__all__ = [
    "MULTI_VALUE_OPTIONS", "NOT_APPLICABLE", "NotApplicable", "expand_multi_value",
    "refuse_not_applicable", "split_app_args",
]
