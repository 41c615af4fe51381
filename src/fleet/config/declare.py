"""How an option is declared: ``option(...)`` makes a dataclass field that carries its flags,
help, parser and the commands that take it.

Each section module (``fleet.config.sections``) declares its options with it, once; the click
options, ``--help``, the README's table, ``fleet.toml`` keys and ``FLEET_<OPTION>`` names are
all derived from these fields. Imports nothing of fleet.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field
from typing import Any, Callable

# Commands a field belongs to. ``config`` takes the same options as ``up`` (design: "same
# options as up"); ``balance`` takes only what the proxy needs.
UP = frozenset({"up", "config"})
PROXY = frozenset({"up", "config", "balance"})
CONTROL = frozenset({"up", "config", "balance", "status", "reload", "scale", "down", "logs"})

# Where the TLS key's password comes from (never argv); neither reaches a worker.
SSL_PASSWORD_ENV = ("FLEET_SSL_PASSWORD", "BOKEH_SSL_PASSWORD")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the source."""


def option(
    default: Any,
    *flags: str,
    help: str,
    parse: Callable[[Any], Any] = str,
    commands: frozenset[str] = UP,
    multiple: bool = False,
    is_flag: bool = False,
    metavar: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    show_default: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a settings field together with its command-line option.

    A ``secret`` option is never written back out (``fleet config``, comments, worker argv)."""
    metadata = {
        "flags": flags,
        "help": help,
        "parse": parse,
        "commands": commands,
        "multiple": multiple,
        "is_flag": is_flag,
        "metavar": metavar,
        "show_default": show_default,
        "secret": secret,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def is_option(f: Field[Any]) -> bool:
    """Whether a field is a command-line option (not ``app``, ``ssl_password``, ...)."""
    return bool(f.metadata.get("flags"))


def field_default(f: Field[Any]) -> Any:
    """The value a field has when no source sets it."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc,operator]


def env_name(name: str) -> str:
    """``max_body_size`` -> ``FLEET_MAX_BODY_SIZE``."""
    return "FLEET_" + name.upper()


def long_flag(f: Field[Any]) -> str:
    """The option's long name as error messages show it (``--sticky`` for ``--sticky/--no-sticky``)."""
    return str(f.metadata["flags"][-1]).split("/")[0]


__all__ = ["CONTROL", "PROXY", "SSL_PASSWORD_ENV", "UP", "ConfigError", "env_name", "field_default",
           "is_option", "long_flag", "option"]
