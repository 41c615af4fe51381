"""Config injection through option values: the reported attacks, refused where the option is
parsed, and (should a value ever get past the parser) still written as one literal argument.

The two reported payloads run through ``fleet config`` itself (a subprocess, as a user would),
then through the writers directly with the parser bypassed, and the output goes to the real
``nginx -t`` / ``haproxy -c`` and to the Python readers of ``tests/configsyntax.py``.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

import configsyntax as syntax
from fleet.config import ConfigError, build_config
from fleet.configgen import Deployment, render
from fleet.configgen.quoting import apache, comment_line, haproxy, nginx, nginx_value, systemd_word
from fleet.values import parse_file_path, parse_host, parse_socket_path, parse_text, parse_token, parse_url_path
from support import EXAMPLES, free_port, require_tool
from up_helpers import run_cli

APP = str(EXAMPLES / "tornado_hello.py")
TAB = "\t"
# The reported prefix: closes the map's string and block, opens a server on its own port.
NGINX_PAYLOAD = (f'/x";{TAB}}}{TAB}server{TAB}{{{TAB}listen{TAB}127.0.0.1:7698;{TAB}return{TAB}200{TAB}'
                 f'INJECTED;{TAB}}}{TAB}map{TAB}$host{TAB}$fleet_dummy{TAB}{{{TAB}default{TAB}"')
HAPROXY_PAYLOAD = "/healthz\n    http-request return status 200 content-type text/plain string INJECTED"


def _state(tmp_path: Path) -> Deployment:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Deployment(fleet_executable="/usr/local/bin/fleet", working_directory=str(tmp_path),
                      state_dir=str(state), bokeh_static_dir="/usr/share/bokeh-static")


def _check(tool: str, args: list[str], conf: Path) -> str:
    result = subprocess.run([require_tool(tool), *args, str(conf)], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr + conf.read_text()
    return result.stdout + result.stderr


# -- the reported attacks -------------------------------------------------------------------

def test_the_reported_nginx_prefix_is_refused_by_fleet_config(tmp_path: Path) -> None:
    result = run_cli("config", "nginx", APP, "-n", "2", "--prefix", NGINX_PAYLOAD, "-o", str(tmp_path / "n.conf"))
    assert result.returncode != 0
    assert "--prefix" in result.stderr and "'\"' (U+0022)" in result.stderr, result.stderr
    assert not (tmp_path / "n.conf").exists()


def test_the_reported_haproxy_health_path_is_refused_by_fleet_config(tmp_path: Path) -> None:
    result = run_cli("config", "haproxy", APP, "-n", "2", "--health-path", HAPROXY_PAYLOAD,
                     "-o", str(tmp_path / "h.cfg"))
    assert result.returncode != 0
    assert "--health-path" in result.stderr and "'\\n' (U+000A)" in result.stderr, result.stderr
    assert not (tmp_path / "h.cfg").exists()


def test_past_the_parser_the_nginx_prefix_stays_inside_its_arguments(tmp_path: Path) -> None:
    """The writer alone: the payload in a Config built without the parser still gives a file
    that nginx accepts with one server block and the prefix as a literal location."""
    config = dataclasses.replace(
        build_config({"workers": "2", "port": str(free_port())}, {}, {}, command="config", app=APP),
        prefix=NGINX_PAYLOAD)
    text = render("nginx", config, _state(tmp_path))
    conf = tmp_path / "state" / "nginx.conf"
    conf.write_text(text)
    _check("nginx", ["-t", "-c"], conf)
    http = next(d for d in syntax.nginx(text) if d.name == "http")
    servers = [d for d in http.block or [] if d.name == "server"]
    assert len(servers) == 1
    locations = [d.args for d in servers[0].block or [] if d.name == "location"]
    assert [NGINX_PAYLOAD.replace(TAB, "\\x09") + "/static/"] in locations
    rows = syntax.flatten(syntax.nginx(text))
    assert not [row for row in rows if row[1] in {"listen", "return"} and "7698" in " ".join(row[2])]
    assert not [row for row in rows if row[1] == "map" and "$fleet_dummy" in row[2]]


def test_past_the_parser_the_haproxy_health_path_stays_one_argument(tmp_path: Path) -> None:
    config = dataclasses.replace(
        build_config({"workers": "2", "port": str(free_port()), "health_path": "/healthz"}, {}, {},
                     command="config", app=APP),
        health_path=HAPROXY_PAYLOAD)
    text = render("haproxy", config, _state(tmp_path))
    conf = tmp_path / "state" / "haproxy.cfg"
    conf.write_text(text)
    _check("haproxy", ["-c", "-f"], conf)
    backend = next(d for d in syntax.haproxy(text) if d.name == "backend")
    assert not [d for d in backend.block or [] if d.name == "http-request" and "return" in d.args]
    check = next(d for d in backend.block or [] if d.name == "http-check" and d.args[0] == "send")
    assert check.args[4] == HAPROXY_PAYLOAD.replace("\n", "\\x0a")


def test_a_newline_in_any_value_stays_inside_the_generated_by_comment(tmp_path: Path) -> None:
    config = build_config({"workers": "2"}, {}, {}, command="config", app=APP,
                          app_args=("x\nserver { listen 7698; }\r\n# ",))
    for kind in ("nginx", "haproxy", "apache", "systemd", "dockerfile"):  # those whose comments hold it
        text = render(kind, config, _state(tmp_path))
        generated = [line for line in text.splitlines() if "Generated by" in line or "fleet in a container" in line]
        assert generated and all("\\x0a" in line for line in generated if "--args" in line), (kind, generated)
        assert not any(line.startswith("server {") for line in text.splitlines()), kind


# -- the parsers: one rule per kind of value, each error names the option and the character --

@pytest.mark.parametrize("flag, value, shown", [
    ("--prefix", "/a b", "' ' (U+0020)"),
    ("--prefix", "/a;b", "';'"),
    ("--prefix", "/a{b", "'{' (U+007B)"),
    ("--metrics-path", "/m\tx", "'\\t' (U+0009)"),
    ("--health-path", '/h"', "'\"' (U+0022)"),
    ("--health-path", "/h%zz", "%XX"),
    ("--unix-socket", "/tmp/a\nb", "'\\n' (U+000A)"),
    ("--unix-socket", "/tmp/a,b", "','"),
    ("--ssl-certfile", "/tmp/$HOME", "'$' (U+0024)"),
    ("--state-dir", '/tmp/a"b', "'\"' (U+0022)"),
    ("--address", "127.0.0.1;", "';' (U+003B)"),
    ("--upstream", "evil{:80", "'{' (U+007B)"),
    ("--on-ready", "echo\nhi", "'\\n' (U+000A)"),
    ("--include-headers", "X-A:b", "':' (U+003A)"),
    ("--cmd", "run \x85 {port}", "'\\x85' (U+0085)"),
])
def test_each_option_refuses_a_bad_character_by_name(flag: str, value: str, shown: str) -> None:
    name = flag[2:].replace("-", "_")
    cli = {"workers": "1", name: (value,) if name in {"upstream", "include_headers"} else value}
    positional = {} if name == "cmd" else {"app": "a.py"}
    with pytest.raises(ConfigError) as error:
        build_config(cli, {}, {}, command="config", **positional)
    assert flag in str(error.value) and shown in str(error.value), str(error.value)


def test_app_refuses_control_characters() -> None:
    with pytest.raises(ConfigError, match=r"APP.*U\+000A"):
        build_config({"workers": "1"}, {}, {}, command="config", app="a\n.py")


@pytest.mark.parametrize("value", ["/", "/metrics", "/a/b-c_d.e~f", "/x$y;z=1,2", "/%2Fok", "/@user:pw", "/(a)*+!&'"])
def test_rfc3986_paths_are_accepted(value: str) -> None:
    assert parse_url_path(value) == value


@pytest.mark.parametrize("value", ["127.0.0.1", "::", "::1", "[::1]", "0.0.0.0", "localhost", "my-host.example.com",
                                   "xn--bcher-kva.example"])
def test_hosts_are_accepted(value: str) -> None:
    assert parse_host(value) == value


@pytest.mark.parametrize("value", ["", "a b", "-x.example", "[1.2.3.4]", "a..b", "x" * 64 + ".example", "ex\u00e4mple"])
def test_not_hosts_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a host"):
        parse_host(value)


def test_paths_text_and_tokens() -> None:
    assert parse_file_path("/srv/My App/cert.pem") == "/srv/My App/cert.pem"
    assert parse_socket_path("/run/fleet/x.sock") == "/run/fleet/x.sock"
    assert parse_text("python -m http.server {port} 'a b' \"c\" $PORT") .endswith("$PORT")
    assert parse_token("X-Forwarded-For") == "X-Forwarded-For"
    for bad in ("\ud800", "a\x00b", "a\u2028b"):
        with pytest.raises(ValueError):
            parse_text(bad)


# -- the quoting rules ----------------------------------------------------------------------

def test_plain_values_are_written_as_before() -> None:
    for quote in (nginx, haproxy):
        assert quote("/dash/static/") == "/dash/static/"
        assert quote("[::1]:5100") == "[::1]:5100"
    assert apache("/dash/") == '"/dash/"'
    assert systemd_word("--port") == "--port"


def test_each_format_quotes_its_own_specials() -> None:
    assert nginx('/a b;{}"\\') == '"/a b;{}\\"\\\\"'
    assert nginx_value("Path=/a$b") == '"Path=/a${fleet_dollar}b"'
    assert haproxy("/it's #1") == "'/it'\\''s #1'"
    assert apache('/a "b"') == '"/a \\"b\\""'
    assert systemd_word("50%$x\n") == '"50%%$$x\\x0a"'
    assert comment_line("a\nb\\") == "a\\x0ab\\x5c"


@pytest.mark.parametrize("path", ["//", "/metrics//x", "//evil.example/metrics"])
def test_a_url_path_with_an_empty_segment_is_refused_naming_it(path: str) -> None:
    with pytest.raises(ConfigError, match="empty segment"):
        build_config({"metrics_path": path}, {}, {}, command="config", app=APP)
