"""The Hooks section of fleet's settings.

Shell commands run on worker events (ready, exit, crash loop) and how long they may run. Read by
the hook runner (``config.hooks``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import option
from fleet.values import parse_duration, parse_text


@dataclass(frozen=True)
class HookSettings:
    """The Hooks section (``config.hooks``); frozen."""

    on_ready: str | None = option(
        None, "--on-ready", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker becomes ready (env: FLEET_HOOK_EVENT, "
             "FLEET_WORKER_ID, FLEET_WORKER_PID, FLEET_WORKER_PORT).",
    )
    on_exit: str | None = option(
        None, "--on-exit", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker's process exits (not during fleet's own stop); "
             "also FLEET_EXIT_CODE or FLEET_EXIT_SIGNAL.",
    )
    on_crash_loop: str | None = option(
        None, "--on-crash-loop", parse=parse_text, metavar="CMD",
        help="Shell command run when a worker starts crash-looping.",
    )
    hook_timeout: float = option(
        30.0, "--hook-timeout", parse=parse_duration, metavar="SECONDS",
        help="A hook still running after this long is killed (with its process group).",
    )


__all__ = ["HookSettings"]
