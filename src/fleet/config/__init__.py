"""fleet's settings: one frozen ``Config`` for every command, declared in sections.

- ``declare``: ``option(...)``, the one declaration of an option (flags, help, parser, commands);
- ``sections``: one frozen dataclass per section (Workers, Proxy, Limits, TLS, Trust, Bokeh,
  Recycling, Logs, Hooks, Operations, Generated configuration), in ``--help`` order;
- ``model``: ``Config``, all sections at once (flat access), and ``config.limits``,
  ``config.tls``, ... the frozen view a subsystem is given;
- ``merge``: ``build_config``, the only merge of command line > ``FLEET_<OPTION>`` >
  ``fleet.toml`` > defaults, and ``load_toml``;
- ``validate``: the cross-field rules;
- ``reference``: the options grouped by section, for ``--help`` and the README's table.

The port blocks live in ``fleet.supervisor.portblocks``, the parsers of trust and allow
entries in ``fleet.rules``; option values in ``fleet.values`` and ``fleet.bokeh_values``.
Everything that used to be importable from ``fleet.config`` still is.
"""

from __future__ import annotations

from dataclasses import replace

from fleet.bokeh_values import (
    parse_existing_file,
    parse_milliseconds,
    parse_num_procs,
    parse_prefix,
    parse_session_ids,
    parse_whole_seconds,
)
from fleet.config.declare import CONTROL, PROXY, SSL_PASSWORD_ENV, UP, ConfigError, option
from fleet.config.merge import build_config, load_toml, option_fields
from fleet.config.model import Config, changed_sections
from fleet.config.sections import (
    SECTIONS,
    BokehSettings,
    GeneratedSettings,
    HookSettings,
    LimitSettings,
    LogSettings,
    OperationsSettings,
    ProxySettings,
    RecyclingSettings,
    Section,
    TLSSettings,
    TrustSettings,
    WorkerSettings,
    section_of,
)
from fleet.config.sections.operations import parse_fleet_name
from fleet.config.sections.proxy import PROXY_KINDS, parse_proxy_kind, parse_proxy_processes
from fleet.config.validate import validate
from fleet.supervisor.portblocks import default_surge_base
from fleet.values import (  # re-exported: fleet.config is where options and their parsers meet
    DEFAULT_METRICS_ALLOW,
    GIB,
    KIB,
    MIB,
    parse_bool,
    parse_count,
    parse_duration,
    parse_host_entry,
    parse_hostport,
    parse_hsts,
    parse_log_level,
    parse_network,
    parse_origin_entry,
    parse_port,
    parse_positive_int,
    parse_size,
    parse_trusted_proxy,
    parse_url_path,
)

__all__ = [
    "CONTROL", "DEFAULT_METRICS_ALLOW", "GIB", "KIB", "MIB", "PROXY", "PROXY_KINDS", "SECTIONS",
    "SSL_PASSWORD_ENV", "UP", "BokehSettings", "Config", "ConfigError", "GeneratedSettings",
    "HookSettings", "LimitSettings", "LogSettings", "OperationsSettings", "ProxySettings",
    "RecyclingSettings", "Section", "TLSSettings", "TrustSettings", "WorkerSettings", "build_config",
    "changed_sections", "default_surge_base", "load_toml", "option", "option_fields", "parse_bool",
    "parse_count", "parse_duration", "parse_existing_file", "parse_fleet_name", "parse_host_entry", "parse_hostport",
    "parse_hsts", "parse_log_level", "parse_milliseconds", "parse_network", "parse_num_procs",
    "parse_origin_entry", "parse_port", "parse_positive_int", "parse_prefix", "parse_proxy_kind",
    "parse_proxy_processes", "parse_session_ids", "parse_size", "parse_trusted_proxy",
    "parse_url_path", "parse_whole_seconds", "replace", "section_of", "validate",
]
