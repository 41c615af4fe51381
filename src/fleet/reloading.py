"""``fleet reload`` / SIGHUP with a configuration: the master's side of a live reload.

1. ``prepare``: build the new ``Config`` from the source the fleet was started from
   (``fleet.config.source``), as ``fleet up`` builds it (APPs expanded, the run's Bokeh secrets
   kept), plan it (``fleet.config.reloadplan``) and validate what would run. A bad file is
   refused with ``fleet up``'s message and nothing changes.
2. the master applies it (``runner.Master.reload``): in place (front, supervisor, hooks,
   recycler, output), then the new generation every reload starts, then scaling.

``ConfigReloads`` remembers the outcome for ``fleet status`` and counts it for ``/metrics``
(``fleet_config_reloads_total{result}``).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from typing import Any

from fleet.acme.paths import managed_certificate
from fleet.bokeh_settings import app_paths, run_secrets
from fleet.config import Config, validate
from fleet.config.reloadplan import ReloadPlan, plan_reload
from fleet.config.source import ConfigSource

RESULTS = ("applied", "partial", "refused")
# What ``run_secrets`` is handed instead of a fresh secret: each is replaced by the one this run
# already gave its workers (a new secret would end every signed session).
_MADE = "\x00made by fleet\x00"


def rebuilt(source: ConfigSource, running: Config) -> Config:
    """The configuration ``fleet up`` would build now, normalised as the running one was."""
    new = source.load("up")
    if new.cmd is None and new.app:
        paths = app_paths(new.supervisor, new.bokeh)
        new = replace(new, app=paths[0], extra_apps=tuple(paths[1:]), glob=False)
        made, _ = run_secrets(new.bokeh, source.env, make_secret=lambda: _MADE)
        kept = dict(running.bokeh_environment)
        environment = []
        for name, value in made:
            if value == _MADE:
                value = kept.get(name) or secrets.token_urlsafe(32)
            environment.append((name, value))
        new = replace(new, bokeh_environment=tuple(environment))
    return replace(new, **managed_certificate(new.acme, new.ssl_certfile, os.environ))  # --domain: as fleet up does


def prepare(source: ConfigSource | None, running: Config) -> ReloadPlan:
    """The plan of a reload; ``ConfigError`` (nothing changes) for an invalid configuration."""
    if source is None:
        return plan_reload(running, running)
    plan = plan_reload(running, rebuilt(source, running))
    validate(plan.effective, "up")  # what will run, without the changes that are not live
    return plan


class ConfigReloads:
    """The source, the last reload's outcome and the count of each result."""

    def __init__(self, source: ConfigSource | None) -> None:
        self.source = source
        self.counts = {result: 0 for result in RESULTS}
        self.last: dict[str, Any] | None = None

    def record(self, result: str, lines: list[str], now: float | None = None) -> None:
        self.counts[result] += 1
        self.last = {"time": time.time() if now is None else now, "result": result, "changes": lines}

    def status(self) -> dict[str, Any]:
        """``config`` of ``fleet status --json``."""
        return {"source": self.source.describe() if self.source is not None else None,
                "last_reload": self.last}


__all__ = ["ConfigReloads", "RESULTS", "prepare", "rebuilt"]
