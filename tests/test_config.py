"""Config merging: CLI > env > fleet.toml > default, and every click option maps to a field."""

from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from fleet.cli import main
from fleet.config import (
    MIB,
    Config,
    ConfigError,
    build_config,
    load_toml,
    option_fields,
    parse_duration,
    parse_size,
)


def test_defaults_match_the_design() -> None:
    config = build_config({}, {}, {}, app="app.py")
    assert (config.port, config.base_port, config.address) == (5006, 5100, "127.0.0.1")
    assert config.metrics_path == "/metrics" and config.sticky is True
    assert config.max_body_size == 100 * MIB and config.max_header_size == 64 * 1024
    assert (config.start_timeout, config.graceful_timeout, config.upstream_timeout) == (60, 30, 60)
    assert config.workers >= 1


def test_cli_beats_env_beats_toml() -> None:
    toml = {"workers": 2, "base-port": 7000, "port": 7100}
    env = {"FLEET_WORKERS": "3", "FLEET_PORT": "7200"}
    config = build_config({"workers": "4"}, env, toml, app="app.py")
    assert config.workers == 4  # CLI
    assert config.port == 7200  # env over toml
    assert config.base_port == 7000  # toml over default


def test_env_parses_flags_lists_sizes_and_durations() -> None:
    env = {
        "FLEET_NO_PROXY": "true",
        "FLEET_STICKY": "0",
        "FLEET_ALLOW_HOST": "a.example:80, b.example",
        "FLEET_MAX_BODY_SIZE": "2MiB",
        "FLEET_GRACEFUL_TIMEOUT": "500ms",
    }
    config = build_config({}, env, {}, app="app.py")
    assert config.no_proxy is True and config.sticky is False
    assert config.allow_host == ("a.example:80", "b.example")
    assert config.max_body_size == 2 * MIB
    assert config.graceful_timeout == pytest.approx(0.5)


def test_ssl_password_comes_only_from_env() -> None:
    names = {f.name for f in option_fields()}
    assert "ssl_password" not in names
    config = build_config({}, {"FLEET_SSL_PASSWORD": "pw"}, {}, app="app.py")
    assert config.ssl_password == "pw"


@pytest.mark.parametrize(
    "cli, message",
    [
        ({"workers": "0"}, "--workers"),
        ({"port": "70000"}, "--port"),
        ({"max_body_size": "lots"}, "--max-body-size"),
        ({"start_timeout": "-1"}, "--start-timeout"),
        ({"metrics_path": "metrics"}, "--metrics-path"),
        ({"port": "5101", "workers": "3"}, "inside the worker ports"),
        ({"base_port": "65535", "workers": "2"}, "past 65535"),
        ({"ssl_certfile": "cert.pem"}, "go together"),
        ({"metrics_allow": ("10.0.0.0/33",)}, "--metrics-allow.*not an IP network"),
        ({"metrics_allow": ("everyone",)}, "--metrics-allow"),
        ({"max_connections": "-1"}, "--max-connections.*negative"),
        ({"max_connections_per_ip": "many"}, "--max-connections-per-ip.*whole number"),
        ({"max_header_count": "0"}, "--max-header-count"),
        ({"max_trailer_size": "big"}, "--max-trailer-size"),
        ({"max_buffered_request": "-5"}, "--max-buffered-request"),
        ({"min_body_rate": "fast"}, "--min-body-rate"),
        ({"websocket_idle_timeout": "forever"}, "--websocket-idle-timeout"),
        ({"queue_timeout": "-1"}, "--queue-timeout"),
        ({"worker_max_conns": "1.5"}, "--worker-max-conns"),
        ({"worker_timeout": "0.5"}, r"--worker-timeout 0.5: use 0 \(off\) or at least 1 second"),
        ({"worker_timeout": "soon"}, "--worker-timeout"),
    ],
)
def test_bad_values_name_the_option(cli: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(cli, {}, {}, app="app.py")


def test_worker_timeout_defaults_to_60_s_and_0_turns_it_off() -> None:
    assert build_config({}, {}, {}, app="app.py").worker_timeout == 60.0
    assert build_config({"worker_timeout": "0"}, {}, {}, app="app.py").worker_timeout == 0.0
    assert build_config({}, {"FLEET_WORKER_TIMEOUT": "2m"}, {}, app="app.py").worker_timeout == 120.0


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\$FLEET_WORKERS"):
        build_config({}, {"FLEET_WORKERS": "many"}, {}, app="app.py")


def test_unknown_toml_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'wokers'"):
        build_config({}, {}, {"wokers": 3}, app="app.py")


def test_app_and_cmd_are_exclusive_and_one_is_required() -> None:
    with pytest.raises(ConfigError, match="either APP or --cmd"):
        build_config({"cmd": "x {port}"}, {}, {}, app="app.py")
    with pytest.raises(ConfigError, match="missing APP"):
        build_config({}, {}, {})


def test_toml_file_with_fleet_table(tmp_path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\napp = "myapp.py"\nworkers = 2\nallow-host = ["x.example"]\n')
    config = build_config({}, {}, load_toml(str(path), explicit=True))
    assert (config.app, config.workers, config.allow_host) == ("myapp.py", 2, ("x.example",))


def test_missing_explicit_toml_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_toml(str(tmp_path / "nope.toml"), explicit=True)
    assert load_toml(str(tmp_path / "nope.toml"), explicit=False) == {}


@pytest.mark.parametrize(
    "text, expected",
    [("512", 512), ("64k", 65536), ("64KiB", 65536), ("100MiB", 100 * MIB), ("1.5M", int(1.5 * MIB))],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [("30", 30), ("2.5", 2.5), ("500ms", 0.5), ("2m", 120)])
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


def test_every_click_option_maps_to_a_config_field() -> None:
    field_names = {f.name for f in dataclasses.fields(Config)}
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in {"config_file", "as_json", "output", "help", "lines", "follow"}:
                assert param.name in field_names, f"fleet {name} {param.opts} has no Config field"
    # and every option field is reachable from `fleet up` or `fleet config`
    up_params = {p.name for p in main.commands["up"].params} | {p.name for p in main.commands["config"].params}
    for f in option_fields():
        assert f.name in up_params or "up" not in f.metadata["commands"], f.name


def test_cli_usage_error_is_clear() -> None:
    result = CliRunner().invoke(main, ["up", "app.py", "-n", "zero"])
    assert result.exit_code == 2
    assert "--workers" in result.output


def test_hardening_limits_have_their_documented_defaults_and_parse_from_env() -> None:
    config = build_config({}, {}, {}, app="app.py")
    assert config.metrics_allow == ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                    "fc00::/7", "fe80::/10")
    assert (config.max_connections, config.max_connections_per_ip, config.max_header_count) == (10000, 0, 100)
    assert (config.max_trailer_size, config.max_buffered_request, config.min_body_rate) == (8192, 262144, 500)
    assert (config.websocket_idle_timeout, config.queue_timeout, config.worker_max_conns) == (3600.0, 10.0, 0)
    config = build_config({}, {"FLEET_METRICS_ALLOW": "203.0.113.7, 10.1.0.0/16", "FLEET_QUEUE_TIMEOUT": "500ms"},
                          {}, app="app.py")
    assert config.metrics_allow == ("203.0.113.7/32", "10.1.0.0/16") and config.queue_timeout == 0.5
