"""Options declared in sections: --help grouped by section, the README's table generated from the
declarations, each click option one field of one section, frozen section views, and the pure
modules (config, rules, port blocks) free of imports of higher layers."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fleet.cli import main
from fleet.config import (
    SECTIONS,
    Config,
    LimitSettings,
    TLSSettings,
    build_config,
    changed_sections,
    option_fields,
    section_of,
)
from fleet.config.reference import BEGIN, END, markdown_table
from fleet.supervisor.portblocks import block_range, default_surge_base, overlaps, surge_base

ROOT = Path(__file__).resolve().parent.parent
# Options a command declares itself, outside the settings (click's, or the command's own).
OWN_OPTIONS = {"config_file", "as_json", "output", "help", "lines", "follow", "version"}


def help_sections(command: str) -> list[tuple[str, list[str]]]:
    """(heading, [first word of each option line]) of ``fleet COMMAND --help``, in order."""
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    sections: list[tuple[str, list[str]]] = []
    for line in result.output.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            sections.append((line[:-1], []))
        elif sections and line.startswith("  -"):
            sections[-1][1].append(line.split()[0].rstrip(","))
    return sections


def long_flag(field: dataclasses.Field) -> str:  # type: ignore[type-arg]
    return field.metadata["flags"][-1].split("/")[0]


def first_flag(field: dataclasses.Field) -> str:  # type: ignore[type-arg]
    return field.metadata["flags"][0].split("/")[0]


@pytest.mark.parametrize("command", ["up", "config", "balance", "status"])
def test_help_shows_the_section_headings_in_order_and_each_option_under_its_section(command: str) -> None:
    sections = help_sections(command)
    headings = [heading for heading, _ in sections]
    assert headings[0] == "Options"
    expected = [s.title for s in SECTIONS
                if any(command in f.metadata["commands"] for f in option_fields() if section_of(f.name) is s)]
    assert headings[1:] == expected
    listed = dict(sections)
    # click caches a command's help option with the names of the first context it saw: "-h"
    # through `fleet`, "--help" when another test invoked the command alone.
    assert "--config" in listed["Options"] and listed["Options"][-1] in {"-h", "--help"}
    for f in option_fields():
        if command in f.metadata["commands"]:
            assert first_flag(f) in listed[section_of(f.name).title], (f.name, section_of(f.name).title)


def test_up_help_starts_with_workers_and_keeps_every_option_text() -> None:
    sections = help_sections("up")
    assert [heading for heading, _ in sections][:4] == ["Options", "Workers", "Proxy", "Limits"]
    assert sections[1][1][:2] == ["--cmd", "-n"]
    assert sum(len(flags) for _, flags in sections) == len(option_fields()) + 2 - sum(
        1 for f in option_fields() if "up" not in f.metadata["commands"])


def test_every_click_option_maps_to_exactly_one_field_of_one_section() -> None:
    owners: dict[str, list[str]] = {}
    for section in SECTIONS:
        for name in section.names():
            owners.setdefault(name, []).append(section.key)
    assert all(len(keys) == 1 for keys in owners.values()), {n: k for n, k in owners.items() if len(k) > 1}
    assert set(owners) == {f.name for f in dataclasses.fields(Config)}
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in OWN_OPTIONS:
                assert param.name in owners, f"fleet {name} {param.opts} is in no section"
                assert section_of(param.name).key == owners[param.name][0]


def test_option_fields_run_section_by_section() -> None:
    order = [[s.key for s in SECTIONS].index(section_of(f.name).key) for f in option_fields()]
    assert order == sorted(order)


def test_a_section_view_is_a_frozen_copy_of_its_own_fields_only() -> None:
    config = build_config({"max_body_size": "2MiB"}, {"FLEET_HSTS": "60"},
                          {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}, app="app.py")
    limits = config.limits
    assert type(limits) is LimitSettings and limits.max_body_size == 2 * 1024 * 1024
    assert [f.name for f in dataclasses.fields(limits)] == list(LimitSettings.__dataclass_fields__)
    assert not hasattr(limits, "port") and not hasattr(limits, "tls")
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_body_size = 1  # type: ignore[misc]
    assert config.tls == TLSSettings(ssl_certfile="c.pem", ssl_keyfile="k.pem", hsts=60)
    assert dataclasses.replace(config, max_body_size=5).limits.max_body_size == 5
    for section in SECTIONS:
        view = getattr(config, section.key)
        assert type(view) is section.settings
        assert all(getattr(view, name) == getattr(config, name) for name in section.names())


def test_changed_sections_name_only_the_sections_a_change_touches() -> None:
    config = build_config({}, {}, {}, app="app.py")
    assert changed_sections(config, config) == ()
    changed = dataclasses.replace(config, max_body_size=1, hsts=5, on_ready="true")
    assert changed_sections(config, changed) == ("limits", "tls", "hooks")


def test_a_section_taker_accepts_the_view_and_the_whole_config_alike() -> None:
    config = build_config({"trusted_proxy": ("10.0.0.0/8",), "use_xheaders": "true"}, {}, {}, app="app.py")
    assert config.trust.trusted_proxies() == config.trusted_proxies()
    assert "127.0.0.0/8" in config.trust.trusted_proxies()
    assert config.supervisor.apps() == config.apps() == ("app.py",)


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    assert BEGIN in text and END in text, "README.md lost the markers of the options table"
    return text[text.index(BEGIN): text.index(END) + len(END) + 1]


def test_readme_table_lists_every_option_under_its_section() -> None:
    heading = None
    found: dict[str, str] = {}
    for line in readme_block().splitlines():
        if line.startswith("#### "):
            heading = line[5:]
        elif line.startswith("| `-"):
            for flag in line.split(" | ")[0].strip("| ").split(", "):
                found[flag.strip("`")] = heading or ""
    for f in option_fields():
        assert found.get(long_flag(f)) == section_of(f.name).title, (
            f"README.md: {long_flag(f)} should be under '#### {section_of(f.name).title}'; "
            f"regenerate with: python -m fleet.config.reference README.md")


def test_readme_table_is_the_one_the_declarations_generate() -> None:
    assert readme_block() == markdown_table(), (
        "README.md's options table differs from the declarations; regenerate it with:\n"
        "    python -m fleet.config.reference README.md\nexpected:\n" + markdown_table())


def test_port_blocks() -> None:
    assert default_surge_base(5100, 3, 5006) == 5200
    assert surge_base(5100, 3, 5006, 6000) == 6000
    assert overlaps(block_range(5100, 3), block_range(5102, 3))
    assert not overlaps(block_range(5100, 3), block_range(5103, 3))


def modules_imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('fleet')))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_rules_and_port_blocks_import_nothing_of_fleet() -> None:
    assert modules_imported_by("fleet.rules") == {"fleet", "fleet.rules"}
    assert modules_imported_by("fleet.supervisor.portblocks") == {
        "fleet", "fleet.supervisor", "fleet.supervisor.portblocks"}


def test_config_imports_no_higher_layer_and_nothing_lazily() -> None:
    imported = modules_imported_by("fleet.config")
    lower = {"fleet", "fleet.values", "fleet.bokeh_values", "fleet.rules", "fleet.cpulimit", "fleet.statetable",
             "fleet.supervisor", "fleet.supervisor.portblocks", "fleet.supervisor.generations"}
    assert {m for m in imported if not m.startswith("fleet.config")} <= lower
    for path in (ROOT / "src/fleet/config").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{path.name}: {node.name} imports inside a function"


def test_bokeh_worker_settings_come_from_the_bokeh_section_alone() -> None:
    from fleet.bokeh_settings import run_secrets, worker_settings

    config = build_config({"keep_alive": "500", "prefix": "/dash", "session_ids": "signed"}, {}, {}, app="app.py")
    assert worker_settings(config.bokeh) == worker_settings(config) == \
        '{"keep_alive":500,"prefix":"/dash","session_ids":"signed"}'
    environment, warnings = run_secrets(config.bokeh, {}, make_secret=lambda: "s" * 43)
    assert dict(environment) == {"BOKEH_SIGN_SESSIONS": "true", "BOKEH_SECRET_KEY": "s" * 43}
    assert len(warnings) == 1
