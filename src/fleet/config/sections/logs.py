"""The Logs section of fleet's settings.

Fleet's own output and the workers' log files: level, access log, JSON lines, per- worker files
and their rotation. Read as ``config.logs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import PROXY, option
from fleet.values import MIB, parse_bool, parse_count, parse_file_path, parse_log_level, parse_size


@dataclass(frozen=True)
class LogSettings:
    """The Logs section (``config.logs``); frozen."""

    log_dir: str | None = option(
        None, "--log-dir", parse=parse_file_path, metavar="DIR",
        help="Also write each worker's output to DIR/w<i>.log (DIR/s<i>.log in the surge port block).",
    )
    log_max_size: int = option(
        100 * MIB, "--log-max-size", parse=parse_size, metavar="SIZE", show_default="100MiB",
        help="Rotate a --log-dir file when it would grow past this (0: never).",
    )
    log_keep: int = option(
        5, "--log-keep", parse=parse_count, metavar="N",
        help="Rotated --log-dir files kept (w1.log.1 ... w1.log.N; 0: truncate instead).",
    )
    log_json: bool = option(
        False, "--log-json", is_flag=True, parse=parse_bool,
        help="fleet's output as one JSON object per line (time, source, worker, message), for log "
             "shippers.",
    )
    log_level: str = option(
        "info", "--log-level", parse=parse_log_level, commands=PROXY,
        help="debug, info, warning, error or critical.",
    )
    access_log: bool = option(
        False, "--access-log", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Log one line per proxied request.",
    )


__all__ = ["LogSettings"]
