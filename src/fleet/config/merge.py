"""``build_config``: the one place where the command line, the environment (``FLEET_<OPTION>``,
e.g. ``FLEET_WORKERS=4``), ``fleet.toml`` and the defaults are merged, in that order of
precedence, into a validated ``Config``.

``build_config`` is pure (it takes the three sources as mappings) so the precedence rules are
unit-tested without a shell; ``load_toml`` is this package's only I/O.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Mapping

from fleet.config.declare import SSL_PASSWORD_ENV, ConfigError, env_name, is_option, long_flag
from fleet.config.model import Config
from fleet.config.validate import validate
from fleet.values import parse_text


def option_fields() -> list[Field[Any]]:
    """The Config fields that are command-line options, section by section."""
    return [f for f in fields(Config) if is_option(f)]


def _parse_value(f: Field[Any], raw: Any, source: str) -> Any:
    parse = f.metadata["parse"]
    try:
        if f.metadata["multiple"]:
            if isinstance(raw, str):
                items = [item for item in re.split(r"[,\s]+", raw) if item]
            elif isinstance(raw, (list, tuple)):
                items = list(raw)
            else:
                raise ValueError(f"expected a list, got {raw!r}")
            return tuple(parse(item) for item in items)
        if raw is None:
            return None
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{long_flag(f)} (from {source}): {exc}") from None


def build_config(
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    toml: Mapping[str, Any],
    *,
    command: str = "up",
    **positional: Any,
) -> Config:
    """Merge the three sources (CLI > env > toml > default) into a validated Config.

    ``cli`` holds only the options given on the command line (name -> value). ``toml`` keys
    may use dashes or underscores (``base-port`` or ``base_port``); an unknown key is an
    error rather than silently ignored, since a typo there would otherwise go unnoticed.
    """
    known = {f.name: f for f in option_fields()}
    toml_values: dict[str, Any] = {}
    for key, value in toml.items():
        name = key.replace("-", "_")
        if name in {"app", "app_args"}:
            toml_values[name] = value
            continue
        if name not in known:
            raise ConfigError(f"fleet.toml: unknown setting {key!r}")
        toml_values[name] = value

    values: dict[str, Any] = {}
    for name, f in known.items():
        if name in cli and cli[name] is not None and not (f.metadata["multiple"] and cli[name] == ()):
            values[name] = _parse_value(f, cli[name], "command line")
        elif env_name(name) in env:
            values[name] = _parse_value(f, env[env_name(name)], f"${env_name(name)}")
        elif name in toml_values:
            values[name] = _parse_value(f, toml_values[name], "fleet.toml")
    apps = positional.get("app") or toml_values.get("app")
    if apps:
        apps = (apps,) if isinstance(apps, str) else tuple(str(app) for app in apps)
        values["app"], values["extra_apps"] = apps[0], apps[1:]
        for app in apps:  # APP reaches every generated file too
            try:
                parse_text(app, "APP")
            except ValueError as exc:
                raise ConfigError(f"APP: {exc}") from None
    if positional.get("app_args"):
        values["app_args"] = tuple(positional["app_args"])
    elif "app_args" in toml_values:
        values["app_args"] = tuple(str(arg) for arg in toml_values["app_args"])
    for name in SSL_PASSWORD_ENV:  # FLEET_ first; Bokeh's name is accepted too
        if name in env:
            values["ssl_password"] = env[name]
            break
    config = Config(**values)
    validate(config, command)
    return config


def load_toml(path: str | None, *, explicit: bool) -> dict[str, Any]:
    """Read ``fleet.toml`` (a ``[fleet]`` table or top-level keys). Missing is fine unless named."""
    target = Path(path or "fleet.toml")
    if not target.exists():
        if explicit:
            raise ConfigError(f"config file not found: {target}")
        return {}
    try:
        data = tomllib.loads(target.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {target}: {exc}") from None
    table = data.get("fleet", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{target}: [fleet] must be a table")
    return table


__all__ = ["build_config", "load_toml", "option_fields"]
