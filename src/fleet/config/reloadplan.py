"""How a running fleet takes a new configuration: for each changed option, the way it is
applied (``plan_reload``), and the configuration that then runs (``ReloadPlan.effective``).

Pure: two ``Config`` values in, a plan out; the master (``fleet.reloading``) does the I/O.

An option's section mostly decides (``SECTION_WAYS``): Limits, Trust, TLS, Recycling, Logs and
Hooks are read by the master and its proxy for each new connection, request or event, so they
apply in place; Workers and Bokeh settings reach the workers when they start, so they apply
through the new generation every ``fleet reload`` starts; the Proxy and Operations sections are
bound sockets and names. ``EXCEPTIONS`` lists every option that differs from its section, with
the reason. A change that is not possible live is reported and left out: the rest applies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from typing import Any

from fleet.config.declare import is_option, long_flag
from fleet.config.model import Config
from fleet.config.sections import SECTIONS, section_of


class Way(enum.Enum):
    """How one change reaches the running fleet."""

    IN_PLACE = "in place"  # new connections, requests and events see it
    GENERATION = "new generation"  # the workers of the generation this reload starts get it
    SCALE = "scaling"  # workers started or stopped
    NOT_LIVE = "not possible live"  # reported; the running value stays until a restart


# The way of each section's options, unless ``EXCEPTIONS`` says otherwise.
SECTION_WAYS: dict[str, tuple[Way, ...]] = {
    "supervisor": (Way.GENERATION,),
    "frontend": (Way.NOT_LIVE,),
    "limits": (Way.IN_PLACE,),
    "tls": (Way.IN_PLACE,),
    "acme": (Way.NOT_LIVE,),
    "trust": (Way.IN_PLACE,),
    "bokeh": (Way.GENERATION,),
    "recycling": (Way.IN_PLACE,),
    "logs": (Way.IN_PLACE,),
    "hooks": (Way.IN_PLACE,),
    "operations": (Way.NOT_LIVE,),
    "generated": (Way.IN_PLACE,),
}

_BOUND = "a bound socket or name: restart fleet (fleet down; fleet up)"
_PER_CONNECTION = "read by the proxy for each new connection"
_AT_START = "the workers get it when they start"
SECTION_REASONS = {
    "supervisor": _AT_START, "frontend": _BOUND, "limits": _PER_CONNECTION,
    "tls": "read for each new connection (the certificate and key: for each new handshake)",
    "acme": "the certificate manager holds its account, order and state directory from the start: "
            "restart fleet (the stored certificate is reused)",
    "trust": _PER_CONNECTION, "bokeh": _AT_START, "recycling": "read by the recycler every second",
    "logs": "read by fleet's output and the proxy", "hooks": "read at each worker event",
    "operations": _BOUND, "generated": "used by fleet config only",
}

# option -> (ways, why it differs from its section)
EXCEPTIONS: dict[str, tuple[tuple[Way, ...], str]] = {
    "workers": ((Way.SCALE,), "workers are started or stopped, as by fleet scale"),
    "app": ((Way.NOT_LIVE,), "the APP decides what the proxy serves itself (Bokeh static files, "
                             "session routing): restart fleet"),
    "extra_apps": ((Way.NOT_LIVE,), "the APPs decide what the proxy serves itself: restart fleet"),
    "cmd": ((Way.NOT_LIVE,), "switching between APP and --cmd changes how workers are probed: "
                             "restart fleet"),
    "glob": ((Way.NOT_LIVE,), "--glob is expanded once, at start: restart fleet"),
    "base_port": ((Way.NOT_LIVE,), "the running workers hold their port blocks"),
    "surge_base_port": ((Way.NOT_LIVE,), "the running workers hold their port blocks"),
    "worker_timeout": ((Way.GENERATION,), "a worker gets its beat interval when it starts; the "
                                          "new generation is watched with the new timeout"),
    "health_path": ((Way.GENERATION,), "probed when each new worker starts and while it runs"),
    "reload_batch": ((Way.IN_PLACE,), "read by the supervisor at each reload"),
    "drain_timeout": ((Way.IN_PLACE,), "read by the supervisor at each drain"),
    "start_timeout": ((Way.IN_PLACE,), "read by the supervisor at each start"),
    "graceful_timeout": ((Way.IN_PLACE,), "read by the supervisor at each stop"),
    "sticky": ((Way.IN_PLACE,), "read by the proxy for each new connection"),
    "compress": ((Way.IN_PLACE,), "read by the proxy for each new connection"),
    # Read by the proxy and handed to every worker too (Bokeh checks them itself).
    "max_header_size": ((Way.IN_PLACE, Way.GENERATION), "the workers get it too"),
    "max_body_size": ((Way.IN_PLACE, Way.GENERATION), "the workers get it too"),
    "allow_websocket_origin": ((Way.IN_PLACE, Way.GENERATION), "Bokeh workers check it too"),
    "trusted_proxy": ((Way.IN_PLACE, Way.GENERATION), "the workers get it too"),
    "use_xheaders": ((Way.IN_PLACE, Way.GENERATION), "the workers get it too"),
    "https_redirect_port": ((Way.NOT_LIVE,), _BOUND),
    "log_dir": ((Way.GENERATION,), "a worker opens its log file when it starts"),
    "max_requests": ((Way.IN_PLACE,), "each worker's request limit is drawn when it starts"),
    "max_requests_jitter": ((Way.IN_PLACE,), "each worker's request limit is drawn when it starts"),
    "metrics_path": ((Way.NOT_LIVE,), "the route is registered at start"),
    "bokeh_environment": ((Way.GENERATION,), "the workers' environment"),
    "ssl_password": ((Way.IN_PLACE,), "read with the certificate"),
}


def ways_of(name: str) -> tuple[Way, ...]:
    """How a change of ``name`` is applied: its exception, else its section's way."""
    if name in EXCEPTIONS:
        return EXCEPTIONS[name][0]
    return SECTION_WAYS[section_of(name).key]


def reason_of(name: str) -> str:
    """Why ``name`` is applied the way it is."""
    if name in EXCEPTIONS:
        return EXCEPTIONS[name][1]
    return SECTION_REASONS[section_of(name).key]


@dataclass(frozen=True)
class Change:
    """One changed option: its values and how it is applied (``why`` when not live)."""

    name: str
    before: Any
    after: Any
    ways: tuple[Way, ...]
    why: str = ""

    @property
    def live(self) -> bool:
        return Way.NOT_LIVE not in self.ways

    def describe(self) -> str:
        shown = "(secret)" if _secret(self.name) else f"{_show(self.before)} -> {_show(self.after)}"
        how = " and ".join(way.value for way in self.ways)
        line = f"{_flag(self.name)}: {shown}: {how}"
        return f"{line} ({self.why})" if self.why and not self.live else line


@dataclass(frozen=True)
class ReloadPlan:
    changes: tuple[Change, ...]
    effective: Config  # what runs after the reload: the new config without what is not live

    @property
    def refused(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.live)

    def needs(self, way: Way) -> bool:
        return any(way in c.ways for c in self.changes if c.live)

    @property
    def result(self) -> str:
        """``applied`` or ``partial`` (something was not possible live)."""
        return "partial" if self.refused else "applied"

    def lines(self) -> list[str]:
        return [c.describe() for c in self.changes] or ["no setting changed"]


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Each option whose value differs, with its way; derived values that cannot move (the
    surge port block, TLS switched on or off) are not live either."""
    changes = []
    for section in SECTIONS:
        for name in section.names():
            before, after = getattr(old, name), getattr(new, name)
            if before == after:
                continue
            ways, why = ways_of(name), reason_of(name)
            if name in {"ssl_certfile", "ssl_keyfile"} and bool(before) != bool(after):
                ways, why = (Way.NOT_LIVE,), "turning TLS on or off changes the listener: restart fleet"
            changes.append(Change(name, before, after, ways, why))
    if old.surge_base() != new.surge_base() and not any(c.name == "surge_base_port" for c in changes):
        changes.append(Change("surge_base_port", old.surge_base(), new.surge_base(), (Way.NOT_LIVE,),
                              "the default surge block moves with --workers past 100: set --surge-base-port"))
    kept = {c.name: c.before for c in changes if not c.live and c.name in _FIELDS}
    return ReloadPlan(tuple(changes), replace(new, **kept))


def table() -> list[tuple[str, str, str]]:
    """(option, how a change is applied, why) for every option, section by section: the README's
    table of "Changing a running fleet"."""
    rows = []
    for section in SECTIONS:
        for f in fields(section.settings):
            if not is_option(f) and f.name not in {"app", "app_args"}:
                continue
            rows.append((_flag(f.name), " and ".join(w.value for w in ways_of(f.name)), reason_of(f.name)))
    return rows


# The README's table sits between these two lines ("Changing a running fleet"); regenerate it
# with ``python -m fleet.config.reloadplan README.md``.
BEGIN = "<!-- live reload table: generated by `python -m fleet.config.reloadplan README.md` -->"
END = "<!-- end of the live reload table -->"


def markdown_table() -> str:
    """``table()`` as Markdown, between ``BEGIN`` and ``END``."""
    lines = [BEGIN, "", "| setting | a change is applied | why |", "|---|---|---|"]
    lines += [f"| `{flag}` | {how} | {why.replace('|', '/')} |" for flag, how, why in table()]
    return "\n".join([*lines, "", END]) + "\n"


def replace_table(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    return text[:start] + markdown_table() + text[end:]


_FIELDS = {f.name for f in fields(Config)}


def _flag(name: str) -> str:
    f = {f.name: f for f in fields(Config)}[name]
    return long_flag(f) if is_option(f) else {"app_args": "--args", "app": "APP"}.get(name, name)


def _secret(name: str) -> bool:
    f = {f.name: f for f in fields(Config)}[name]
    return bool(f.metadata.get("secret")) or name in {"ssl_password", "bokeh_environment"}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "none" if value is None else str(value)


__all__ = ["BEGIN", "END", "Change", "EXCEPTIONS", "ReloadPlan", "SECTION_WAYS", "Way", "markdown_table",
           "plan_reload", "replace_table", "table", "ways_of"]


if __name__ == "__main__":  # pragma: no cover
    import sys

    for path in sys.argv[1:]:
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(replace_table(text))
