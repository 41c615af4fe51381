"""Where a running fleet's configuration came from, so ``fleet reload`` can build it again.

``ConfigSource`` keeps what ``fleet up`` was given: the options typed on its command line, its
environment (as it was at start), the APPs and their arguments, and the path of its
``fleet.toml`` (given with ``--config``/``$FLEET_CONFIG``, or ``./fleet.toml`` as found at start,
made absolute). ``load`` re-reads the file and merges with the same ``build_config`` and the
same rule as at start: command line > ``FLEET_<OPTION>`` > ``fleet.toml`` > default. So the file
may change any setting that the command line and the environment did not set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from fleet.config.merge import build_config, load_toml
from fleet.config.model import Config


@dataclass(frozen=True)
class ConfigSource:
    cli: Mapping[str, Any] = field(default_factory=dict)  # options typed on the command line
    env: Mapping[str, str] = field(default_factory=dict)
    toml_path: str = "fleet.toml"  # absolute
    explicit: bool = False  # named with --config: missing is an error
    app: tuple[str, ...] = ()
    app_args: tuple[str, ...] = ()

    @classmethod
    def of(cls, cli: Mapping[str, Any], env: Mapping[str, str], config_file: str | None,
           app: tuple[str, ...] = (), app_args: tuple[str, ...] = ()) -> "ConfigSource":
        path = os.path.abspath(config_file or "fleet.toml")
        return cls(dict(cli), dict(env), path, config_file is not None, tuple(app), tuple(app_args))

    def describe(self) -> dict[str, Any]:
        """For ``fleet status``: the file (and whether it exists now) and the typed options."""
        return {"file": self.toml_path, "file_exists": os.path.exists(self.toml_path),
                "explicit": self.explicit, "command_line": sorted(self.cli)}

    def load(self, command: str = "up") -> Config:
        """The configuration as ``fleet up`` would build it now. Raises ``ConfigError``."""
        toml = load_toml(self.toml_path, explicit=self.explicit)
        return build_config(self.cli, self.env, toml, command=command, app=self.app, app_args=self.app_args)


__all__ = ["ConfigSource"]
