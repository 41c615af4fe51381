"""bokeh serve's options through fleet, without processes: the grammar, the units,
the run secrets, what reaches a worker's argv and environment, and the session-id prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import given, strategies as st

from fleet.appspec import AppError, AppKind, detect, detect_apps
from fleet.bokeh_settings import app_paths, with_run_secrets, worker_settings
from fleet.cli import _make_config, main
from fleet.cli_grammar import expand_multi_value, split_app_args
from fleet.config import Config, ConfigError, build_config, parse_milliseconds, parse_prefix
from fleet.configgen import render
from fleet.configgen.deployment import Deployment
from fleet.supervisor.command import worker_command
from fleet.supervisor.settings import SupervisorViews
from support import EXAMPLES

BOKEH_APP = str(EXAMPLES / "bokeh_random")


def parsed(*argv: str, command: str = "up") -> Config:
    """The Config ``fleet COMMAND ARGV`` builds (without running anything)."""
    cmd = main.commands[command]
    with cmd.make_context(command, list(argv)) as ctx:
        return _make_config(ctx, command, app=ctx.params["app"], app_args=ctx.params["app_args"])


# -- grammar ---------------------------------------------------------------------------------
def test_several_apps_and_args_like_bokeh_serve() -> None:
    config = parsed("a.py", "b/", "c.ipynb", "-n", "2", "--args", "--flag", "x", "-n", "9")
    assert config.apps() == ("a.py", "b/", "c.ipynb")
    assert config.app_args == ("--flag", "x", "-n", "9")
    assert config.workers == 2


def test_the_older_double_dash_form_still_passes_app_args() -> None:
    config = parsed("a.py", "-n", "1", "--", "--flag", "x")
    assert config.apps() == ("a.py",)
    assert config.app_args == ("--flag", "x")


def test_nargs_plus_options_take_words_up_to_the_next_option() -> None:
    config = parsed("a.py", "--include-headers", "A", "B", "-n", "1", "--exclude-cookies=c1", "c2")
    assert config.include_headers == ("A", "B")
    assert config.exclude_cookies == ("c1", "c2")
    assert config.apps() == ("a.py",)


@given(st.lists(st.text(alphabet="ab-", min_size=1, max_size=4), max_size=8))
def test_split_app_args_keeps_every_word(words: list[str]) -> None:
    own, app_args = split_app_args(words)
    assert not any(word in ("--args", "--") for word in own)
    if any(word in ("--args", "--") for word in words):
        assert [*own, words[len(own)], *app_args] == words
    else:
        assert (own, app_args) == (words, [])


@pytest.mark.parametrize("flag", ["--dev", "--show", "--log-file=x.log", "--use-config"])
def test_bokeh_options_fleet_does_not_take_say_why(flag: str) -> None:
    with pytest.raises(click.UsageError, match="bokeh serve option fleet does not take"):
        parsed("a.py", flag)
    assert parsed("a.py", "--args", flag).app_args == (flag,)  # an app's own argument is its business


def test_expand_multi_value_leaves_other_words_alone() -> None:
    words = ["a.py", "--prefix", "/x", "--include-headers", "H1", "H2", "--glob"]
    assert expand_multi_value(words) == ["a.py", "--prefix", "/x", "--include-headers", "H1",
                                         "--include-headers", "H2", "--glob"]


# -- units and values ------------------------------------------------------------------------
def test_bokehs_millisecond_options_stay_milliseconds() -> None:
    config = parsed("a.py", "--keep-alive", "500", "--check-unused-sessions", "17000",
                    "--unused-session-lifetime", "0")
    assert (config.keep_alive, config.check_unused_sessions, config.unused_session_lifetime) == (500, 17000, 0)
    with pytest.raises(click.UsageError, match="--keep-alive.*milliseconds"):
        parsed("a.py", "--keep-alive", "5s")


@pytest.mark.parametrize("text, expected", [("dash", "/dash"), ("/dash/", "/dash"), ("/a/b", "/a/b"), ("/", None)])
def test_prefix_is_normalised_like_bokeh(text: str, expected: str | None) -> None:
    assert parse_prefix(text) == expected


def test_bad_prefix_and_bad_session_mode_are_clear() -> None:
    with pytest.raises(click.UsageError, match="--prefix"):
        parsed("a.py", "--prefix", "/a/../b")
    with pytest.raises(click.UsageError, match="unsigned, signed, external-signed"):
        parsed("a.py", "--session-ids", "sometimes")


def test_num_procs_points_to_workers() -> None:
    assert parsed("a.py", "--num-procs", "1").num_procs == 1
    with pytest.raises(click.UsageError, match=r"--num-procs.*-n/--workers"):
        parsed("a.py", "--num-procs", "4")


def test_auth_module_and_index_must_exist(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="--auth-module.*no such file"):
        parsed("a.py", "--auth-module", str(tmp_path / "missing.py"))
    module = tmp_path / "auth.py"
    module.write_text("def get_user(handler): return 'x'\n")
    assert parsed("a.py", "--auth-module", str(module)).auth_module == str(module)


def test_parse_milliseconds_rejects_units_and_negatives() -> None:
    for bad in ("1.5", "-1", "10ms", ""):
        with pytest.raises(ValueError):
            parse_milliseconds(bad)


def test_args_with_cmd_is_refused() -> None:
    with pytest.raises(ConfigError, match="--args"):
        build_config({"cmd": "x {port}"}, {}, {}, app_args=("a",))


# -- apps ------------------------------------------------------------------------------------
def test_notebook_is_a_bokeh_app(tmp_path: Path) -> None:
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    spec = detect(str(notebook))
    assert (spec.kind, spec.url_path) == (AppKind.BOKEH, "/nb")


def test_several_apps_must_all_be_bokeh_with_distinct_names(tmp_path: Path) -> None:
    tornado = str(EXAMPLES / "tornado_hello.py")
    with pytest.raises(AppError, match=r"--args"):
        detect_apps([BOKEH_APP, tornado])
    twin = tmp_path / "bokeh_random.ipynb"
    twin.write_text("{}")
    with pytest.raises(AppError, match="/bokeh_random"):
        detect_apps([BOKEH_APP, str(twin)])


def test_not_an_app_hints_at_args(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="--args"):
        detect_apps([BOKEH_APP, "verbose"], cwd=str(tmp_path))


def test_glob_expands_in_order_and_an_empty_match_is_an_error(tmp_path: Path) -> None:
    for name in ("b.py", "a.py"):
        (tmp_path / name).write_text("")
    config = Config(app="*.py", glob=True)
    assert app_paths(config.supervisor, config.bokeh, str(tmp_path)) == ["a.py", "b.py"]
    with pytest.raises(ConfigError, match="no APP matches"):
        app_paths(Config(app="*.ipynb").supervisor, Config(glob=True).bokeh, str(tmp_path))


# -- secrets ---------------------------------------------------------------------------------
def test_signed_sessions_without_a_key_get_one_per_run_shared_by_every_worker() -> None:
    config, warnings = with_run_secrets(Config(app=BOKEH_APP, workers=3, session_ids="signed"), {})
    env = dict(config.bokeh_environment)
    assert env["BOKEH_SIGN_SESSIONS"] == "true" and len(env["BOKEH_SECRET_KEY"]) >= 32
    assert any("BOKEH_SECRET_KEY" in warning for warning in warnings)
    spec = detect(BOKEH_APP)
    commands = [worker_command(SupervisorViews.of(config), spec, index, 3) for index in range(3)]
    assert {c.env["BOKEH_SECRET_KEY"] for c in commands} == {env["BOKEH_SECRET_KEY"]}
    for command in commands:
        assert env["BOKEH_SECRET_KEY"] not in " ".join(command.argv)


def test_a_given_key_is_not_replaced_and_unsigned_needs_none() -> None:
    config, warnings = with_run_secrets(Config(app="a.py", session_ids="signed"), {"BOKEH_SECRET_KEY": "k" * 40})
    assert "BOKEH_SECRET_KEY" not in dict(config.bokeh_environment) and not warnings
    config, warnings = with_run_secrets(Config(app="a.py"), {})
    assert config.bokeh_environment == () and not warnings
    # $BOKEH_SIGN_SESSIONS alone means signed, as with bokeh serve
    config, warnings = with_run_secrets(Config(app="a.py"), {"BOKEH_SIGN_SESSIONS": "yes"})
    assert "BOKEH_SECRET_KEY" in dict(config.bokeh_environment) and warnings


def test_auth_module_without_cookie_secret_gets_one_and_a_warning(tmp_path: Path) -> None:
    module = tmp_path / "auth.py"
    module.write_text("")
    config, warnings = with_run_secrets(Config(app="a.py", auth_module=str(module)), {})
    assert "BOKEH_COOKIE_SECRET" in dict(config.bokeh_environment)
    assert any("cookie" in warning for warning in warnings)
    config, warnings = with_run_secrets(Config(app="a.py", auth_module=str(module)),
                                        {"BOKEH_COOKIE_SECRET": "s" * 40})
    assert config.bokeh_environment == () and not warnings


def test_cookie_secret_goes_to_the_environment_and_never_to_argv_or_configs() -> None:
    secret = "cookie-secret-" + "z" * 30
    config = parsed(BOKEH_APP, "-n", "2", "--cookie-secret", secret, "--prefix", "/dash")
    spec = detect(BOKEH_APP)
    command = worker_command(SupervisorViews.of(config), spec, 1, 2)
    assert command.env["BOKEH_COOKIE_SECRET"] == secret
    assert secret not in " ".join(command.argv)
    assert "cookie" not in worker_settings(config)
    config_only = parsed("systemd", BOKEH_APP, "--cookie-secret", secret, command="config")
    for kind in ("nginx", "apache", "haproxy", "systemd"):
        text = render(kind, config_only, Deployment())
        assert secret not in text, kind
    assert "BOKEH_COOKIE_SECRET" in render("systemd", config_only, Deployment())


def test_worker_settings_carry_bokeh_options_in_bokeh_units() -> None:
    config = parsed(BOKEH_APP, "--prefix", "dash", "--keep-alive", "1000", "--include-headers", "A", "B",
                    "--session-ids", "external-signed", "--disable-index")
    settings = json.loads(worker_settings(config))
    assert settings == {"prefix": "/dash", "keep_alive": 1000, "include_headers": ["A", "B"],
                        "session_ids": "external-signed", "disable_index": True}
    assert json.loads(worker_settings(Config(app="a.py"))) == {}


def test_config_round_trips_apps_and_args() -> None:
    config = parsed(BOKEH_APP, str(EXAMPLES / "bokeh_random"), "--args", "x", "--y")
    from fleet.configgen.common import fleet_arguments

    words = fleet_arguments(config)
    assert words[:2] == [BOKEH_APP, BOKEH_APP] and words[-3:] == ["--args", "x", "--y"]
    again = parsed(*words)
    assert (again.apps(), again.app_args) == (config.apps(), config.app_args)


# -- the worker side (needs bokeh) --------------------------------------------------------------
def test_worker_made_session_ids_carry_the_worker_id_and_verify() -> None:
    from bokeh.util.token import check_session_id_signature

    from fleet.worker.bokeh import worker_session_id_maker

    make = worker_session_id_maker("g3w1")
    unsigned = make(secret_key=None, signed=False)
    assert unsigned.startswith("g3w1-") and "." not in unsigned
    signed = make(secret_key=b"k" * 32, signed=True)
    assert signed.startswith("g3w1-")
    assert check_session_id_signature(signed, secret_key=b"k" * 32, signed=True)
    assert not check_session_id_signature(signed, secret_key=b"other" * 8, signed=True)
    with pytest.raises(ValueError):
        worker_session_id_maker("g3.w1")


def test_installed_bokeh_is_a_supported_version_and_the_hook_point_exists() -> None:
    from bokeh.server.views import session_handler

    from fleet.worker.bokeh import bokeh_version, install_session_ids, is_supported

    assert is_supported(bokeh_version())
    original = session_handler.generate_session_id
    try:
        assert install_session_ids("w7")
        assert session_handler.generate_session_id(secret_key=None, signed=False).startswith("w7-")
    finally:
        session_handler.generate_session_id = original


def _server_kwargs_in_a_fresh_process(settings: dict, env: dict[str, str]) -> dict:
    """bokeh.settings caches what it read from the environment: ask a new interpreter, as a
    worker starts with its environment already set."""
    script = ("import json, sys; from fleet.worker.bokeh import server_kwargs\n"
              "try:\n    k = server_kwargs(json.loads(sys.argv[1]))\n"
              "except RuntimeError as e:\n    print(json.dumps({'error': str(e)})); raise SystemExit\n"
              "k.pop('auth_provider'); k['secret_key'] = (k['secret_key'] or b'').decode()\n"
              "print(json.dumps(k))")
    clean = {name: value for name, value in os.environ.items() if not name.startswith("BOKEH_")}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(settings)], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_server_kwargs_follow_bokeh_serve() -> None:
    kwargs = _server_kwargs_in_a_fresh_process(
        {"keep_alive": 1000, "check_unused_sessions": 2000, "prefix": "/dash",
         "session_ids": "external-signed", "disable_index_redirect": True, "include_headers": ["A"]},
        {"BOKEH_SECRET_KEY": "k" * 40, "BOKEH_COOKIE_SECRET": "c" * 40})
    assert kwargs["keep_alive_milliseconds"] == 1000
    assert kwargs["check_unused_sessions_milliseconds"] == 2000
    assert kwargs["prefix"] == "/dash" and kwargs["include_headers"] == ["A"]
    assert kwargs["sign_sessions"] is True and kwargs["generate_session_ids"] is False
    assert kwargs["secret_key"] == "k" * 40
    assert kwargs["cookie_secret"] == "c" * 40 and kwargs["redirect_root"] is False
    failed = _server_kwargs_in_a_fresh_process({"session_ids": "signed"}, {})
    assert "BOKEH_SECRET_KEY" in failed["error"]
    # no --session-ids: $BOKEH_SIGN_SESSIONS decides, as with bokeh serve
    assert _server_kwargs_in_a_fresh_process({}, {"BOKEH_SIGN_SESSIONS": "true",
                                                  "BOKEH_SECRET_KEY": "k" * 40})["sign_sessions"] is True


def test_generated_configs_serve_bokehjs_under_the_prefix() -> None:
    config = parsed("nginx", BOKEH_APP, "--prefix", "/dash", "-n", "3", command="config")
    deployment = Deployment(bokeh_static_dir="/opt/bokeh/static")
    nginx = render("nginx", config, deployment)
    assert "location /dash/static/ {" in nginx
    after = nginx.split("location /dash/static/extensions/ {\n", 1)[1]
    assert after.lstrip().startswith("proxy_pass http://$fleet_pool;")  # extensions: the workers
    apache = render("apache", config, deployment)
    assert 'Alias "/dash/static/" "/opt/bokeh/static/"' in apache and 'ProxyPass "/dash/static/" !' in apache
    assert 'ProxyPass "/dash/static/extensions/" "balancer://fleet_http/dash/static/extensions/"' in apache
    assert "--prefix /dash" in render("systemd", config, deployment)


def test_worker_reads_apps_and_args_like_fleet_up() -> None:
    from fleet.worker.serve import parse_args

    args = parse_args(["--address", "127.0.0.1", "--bokeh-settings", '{"prefix": "/d"}', "a.py", "b/",
                       "--args", "--address", "x", "--args"])
    assert args.apps == ["a.py", "b/"] and args.app == "a.py"
    assert args.app_args == ["--address", "x", "--args"] and args.address == "127.0.0.1"
