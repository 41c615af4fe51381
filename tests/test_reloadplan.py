"""The live reload planner (``fleet.config.reloadplan``): how each changed option is applied,
what runs afterwards, the README's table; and the rebuild of a running fleet's configuration
from its source (``fleet.config.source``, ``fleet.reloading``) by ``fleet up``'s rules."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from fleet.config import SECTIONS, Config, ConfigError, option_fields
from fleet.config.reloadplan import (
    BEGIN,
    END,
    EXCEPTIONS,
    SECTION_WAYS,
    Way,
    markdown_table,
    plan_reload,
    table,
    ways_of,
)
from fleet.config.source import ConfigSource
from fleet.reloading import prepare, rebuilt

ROOT = Path(__file__).resolve().parent.parent
BASE = Config(app="app.py", workers=2, base_port=5100, port=5006)


def ways(old: Config, new: Config) -> dict[str, tuple[Way, ...]]:
    return {change.name: change.ways for change in plan_reload(old, new).changes}


def test_every_option_has_a_way_and_every_exception_names_a_field() -> None:
    names = {f.name for f in fields(Config)}
    assert set(SECTION_WAYS) == {s.key for s in SECTIONS}
    assert set(EXCEPTIONS) <= names
    for f in option_fields():
        assert ways_of(f.name), f.name
    # Every exception says why it differs from its section.
    for name, (_, why) in EXCEPTIONS.items():
        assert why, name


@pytest.mark.parametrize(("changes", "expected"), [
    ({"max_connections": 50}, (Way.IN_PLACE,)),
    ({"client_timeout": 5.0}, (Way.IN_PLACE,)),
    ({"metrics_allow": ("10.0.0.0/8",)}, (Way.IN_PLACE,)),
    ({"on_ready": "true"}, (Way.IN_PLACE,)),
    ({"max_memory": 2**30}, (Way.IN_PLACE,)),
    ({"access_log": True}, (Way.IN_PLACE,)),
    ({"app_args": ("--x",)}, (Way.GENERATION,)),
    ({"keep_alive": 1000}, (Way.GENERATION,)),
    ({"allow_websocket_origin": ("example.com",)}, (Way.IN_PLACE, Way.GENERATION)),
    ({"workers": 3}, (Way.SCALE,)),
    ({"port": 6000}, (Way.NOT_LIVE,)),
    ({"proxy_processes": 2}, (Way.NOT_LIVE,)),
    ({"control_socket": "/tmp/x.sock"}, (Way.NOT_LIVE,)),
])
def test_each_change_is_applied_the_way_its_section_or_exception_says(changes: dict, expected: tuple) -> None:
    (name,) = changes
    assert ways(BASE, replace(BASE, **changes)) == {name: expected}


def test_what_is_not_live_keeps_its_running_value_and_the_rest_applies() -> None:
    new = replace(BASE, port=6000, max_connections=50, workers=3)
    plan = plan_reload(BASE, new)
    assert plan.effective.port == 5006
    assert plan.effective.max_connections == 50 and plan.effective.workers == 3
    assert plan.result == "partial"
    assert [c.name for c in plan.refused] == ["port"]
    assert plan.needs(Way.SCALE) and plan.needs(Way.IN_PLACE) and not plan.needs(Way.GENERATION)
    assert any("--port: 5006 -> 6000: not possible live (a bound socket" in line for line in plan.lines())


def test_no_change_is_applied_and_says_so() -> None:
    plan = plan_reload(BASE, BASE)
    assert plan.changes == () and plan.result == "applied" and plan.lines() == ["no setting changed"]


def test_tls_switched_on_is_not_live_but_a_new_certificate_path_is() -> None:
    on = replace(BASE, ssl_certfile="a.pem", ssl_keyfile="a.key")
    assert set(ways(BASE, on).values()) == {(Way.NOT_LIVE,)}
    assert ways(on, replace(on, ssl_certfile="b.pem")) == {"ssl_certfile": (Way.IN_PLACE,)}


def test_a_moving_default_surge_block_is_not_live() -> None:
    plan = plan_reload(BASE, replace(BASE, workers=150))
    assert {c.name for c in plan.refused} == {"surge_base_port"}


def test_secrets_are_not_printed() -> None:
    plan = plan_reload(BASE, replace(BASE, cookie_secret="hunter2hunter2"))
    assert "hunter2" not in "\n".join(plan.lines())


def test_readme_table_is_the_planners() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN):readme.index(END) + len(END) + 1]
    assert block == markdown_table(), "run: python -m fleet.config.reloadplan README.md"
    assert len(table()) == len(option_fields()) + 2  # and APP, --args


# -- the source: fleet up's rules again ----------------------------------------------------------

def test_the_command_line_wins_and_the_file_changes_the_rest(tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text("workers = 2\nport = 7000\n")
    source = ConfigSource.of({"port": "6000"}, {"FLEET_MAX_CONNECTIONS": "77"}, str(toml), app=("app.py",))
    first = source.load()
    assert (first.workers, first.port, first.max_connections) == (2, 6000, 77)
    toml.write_text("workers = 3\nport = 7001\nmax_connections = 5\nclient_timeout = 9\n")
    second = source.load()
    assert (second.workers, second.port, second.max_connections, second.client_timeout) == (3, 6000, 77, 9.0)


def test_an_invalid_file_is_refused_with_fleet_ups_message(tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text("workers = 2\n")
    source = ConfigSource.of({}, {}, str(toml), app=("app.py",))
    running = source.load()
    toml.write_text("workers = 2\nbogus = 1\n")
    with pytest.raises(ConfigError, match="fleet.toml: unknown setting 'bogus'"):
        prepare(source, running)
    toml.write_text("max_memory = 100\nmax_memory_hard = 50\n")
    with pytest.raises(ConfigError, match="--max-memory-hard must be larger"):
        prepare(source, running)


def test_a_missing_file_found_at_start_is_read_when_it_appears(tmp_path: Path) -> None:
    source = ConfigSource({}, {}, str(tmp_path / "fleet.toml"), False, ("app.py",), ())
    running = source.load()
    (tmp_path / "fleet.toml").write_text("max_connections = 5\n")
    assert prepare(source, running).effective.max_connections == 5


def test_the_runs_made_secret_is_kept(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    toml = tmp_path / "fleet.toml"
    toml.write_text('session_ids = "signed"\n')
    source = ConfigSource({}, {}, str(toml), True, (str(tmp_path / "app.py"),), ())
    running = rebuilt(source, replace(source.load(), bokeh_environment=(("BOKEH_SECRET_KEY", "k" * 40),)))
    assert dict(running.bokeh_environment)["BOKEH_SECRET_KEY"] == "k" * 40
    toml.write_text('session_ids = "signed"\nkeep_alive = 500\n')
    plan = prepare(source, running)
    assert [c.name for c in plan.changes] == ["keep_alive"]


# -- the proxy's side: a connection keeps the settings it was accepted under -----------------------

def test_a_reloaded_proxy_gives_new_connections_a_new_context_sharing_the_state() -> None:
    import asyncio
    import socket

    from fleet.balancer.server import Balancer
    from fleet.balancer.settings import ProxyViews

    async def until(condition: Any) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.01)

    async def main() -> None:
        balancer = Balancer(ProxyViews.of(Config(port=0, address="127.0.0.1", max_header_count=50)))
        await balancer.start()
        try:
            old = balancer.context
            with socket.create_connection(("127.0.0.1", balancer.port)) as first:
                await until(lambda: len(old.clients) == 1)  # the proxy accepted it
                assert {client.proxy for client in old.clients} == {old}
                balancer.apply(ProxyViews.of(Config(port=0, address="127.0.0.1", max_header_count=5,
                                                    max_connections=40, allow_websocket_origin=("new.example.com",))))
                new = balancer.context
                assert new is not old and new.max_header_count == 5 and old.max_header_count == 50
                assert balancer.max_connections == 40 and balancer.views.limits.max_connections == 40
                # The views keep the port bound at start (port 0 resolved), not the file's 0.
                assert balancer.views.frontend.port == balancer.port
                assert new.default_host == f"127.0.0.1:{balancer.port}".encode()
                assert new.clients is old.clients and new.local_routes is old.local_routes
                assert new.waiting is old.waiting and new.stats is old.stats
                assert new.origin_allowed(b"http://new.example.com") and not old.origin_allowed(b"http://new.example.com")
                with socket.create_connection(("127.0.0.1", balancer.port)) as second:
                    await until(lambda: len(new.clients) == 2)
                    assert sorted(id(c.proxy) for c in new.clients) == sorted([id(old), id(new)])
                    await balancer.stop_accepting()
                    assert old.closing and new.closing  # a stop reaches every context
        finally:
            await balancer.close()

    asyncio.run(main())
