"""No option value adds, removes or splits a directive in any generated file (property test).

Every option that reaches a file (``fleet config nginx|apache|haproxy|systemd|kubernetes|
dockerfile|compose`` and the managed data plane's nginx and HAProxy files) gets random strings
weighted towards what breaks configuration syntax: control characters (tab, newline, CR, NUL,
NEL, the Unicode line separators), quotes, backquote, braces, ``;``, ``$``, ``#``, ``%``,
backslashes, spaces, non-ASCII. Each example must end one of two ways:

1. refused by ``build_config`` with a ``ConfigError`` that names the option (and, for a bad
   character, shows its code point); or
2. accepted, and then the file says exactly what was intended. The file is rendered twice, once
   with the value and once with a harmless placeholder in the same option, and both are read
   back by a Python reader that follows the server's own tokenizer (``tests/configsyntax.py``).
   The two lists of directives (name, arguments, nesting) must be equal once the placeholder is
   replaced by the value: the value arrives whole and literal inside the arguments it was meant
   for, and never as a directive, a block or a comment's end. YAML files are loaded with
   PyYAML and must equal the objects the renderer built; the Dockerfile's exec-form words and
   the systemd ExecStart words must decode to the intended argv.

Wall time: the Python check runs on all 500 examples per format (a few ms each). The real
checkers (``nginx -t``, ``haproxy -c``, ``apache2 -t``, ``systemd-analyze verify``; 10-90 ms a
run) then run on up to ``REAL_CHECKS`` accepted examples per format, those with the most unusual
characters first, with every file they name created for real under a temporary ServerRoot /
state directory. Examples whose --address/--upstream/--allow-host is a DNS name stay with the
Python check: the servers resolve names while checking, and this machine has no DNS. A missing
checker skips locally and fails under CI=true (``support.require_tool``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import configsyntax as syntax
from fleet.config import Config, ConfigError, build_config
from fleet.configgen import Deployment, render
from fleet.configgen.common import fleet_arguments, host_names
from fleet.configgen.docker import app_sources
from fleet.configgen.kubernetes import image_path
from fleet.configgen.kubernetes import objects
from fleet.configgen.quoting import NGINX_DOLLAR
from fleet.dataplane.files import DataPlaneError, Layout, Renderer, private_directory
from fleet.dataplane.model import PlaneModel
from support import EXAMPLES, IN_CI, free_port, require_tool

EXAMPLES_PER_FORMAT = 500
REAL_CHECKS = 60
APP = str(EXAMPLES / "tornado_hello.py")
IS_ROOT = os.geteuid() == 0
RUN_AS = {"user": "nobody", "group": "nogroup"} if IS_ROOT else {}
FLEET = str(Path(sys.executable).with_name("fleet"))

pytestmark = pytest.mark.timeout(240)

# -- values ----------------------------------------------------------------------------------

NASTY = list("\t\n\r\x0b\x0c\x00\x1b\x7f\x85\u2028\u2029\ufeff\"'`;{}$#%\\ ()[]<>|&*?=:@!,+~^./-") + [
    "é", "日", "${", "..", "%2F", "$host", "\\n", "}\nserver {", "';", "\"; ", "# ", "\r\n"]
CHAR = st.one_of(st.sampled_from(NASTY), st.characters(blacklist_categories=("Cs",)),
                 st.sampled_from("abcxyz019"))
TEXT = st.lists(CHAR, max_size=12).map("".join)
URL = st.one_of(TEXT, TEXT.map(lambda s: "/" + s), st.lists(st.sampled_from(NASTY[-14:] + list("ab/$;'(")),
                                                           max_size=6).map(lambda p: "/" + "".join(p)))
HOST = st.one_of(TEXT, st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
                 st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"))


@dataclass(frozen=True)
class Option:
    """An option that reaches the files: how to draw a value, and a placeholder of its kind."""

    name: str
    values: st.SearchStrategy[str]
    placeholder: Callable[[str], str]
    host: bool = False  # a DNS name here is not given to the real checkers


def _host_placeholder(value: str) -> str:
    if value.strip().startswith("["):
        return "[fd00::cafe]"
    return "fd00::cafe" if ":" in value else "placeholder.example"


OPTIONS = [
    # A trailing "/" makes a prefix of a path (nginx ^~, HAProxy path_beg): the placeholder keeps it.
    Option("prefix", URL, lambda v: "/fleetprefix"),
    Option("health_path", URL, lambda v: "/fleethealth" + "/" * v.endswith("/")),
    Option("metrics_path", URL, lambda v: "/fleetmetrics" + "/" * v.endswith("/")),
    Option("unix_socket", TEXT, lambda v: "@/fleet.sock"),
    Option("ssl_certfile", TEXT, lambda v: "@/fleetcert.pem"),
    Option("ssl_keyfile", TEXT, lambda v: "@/fleetkey.pem"),
    Option("control_socket", TEXT, lambda v: "@/fleetctl"),
    Option("log_dir", TEXT, lambda v: "@/fleetlogs"),
    Option("state_dir", TEXT, lambda v: "@/fleetstate"),
    Option("ico_path", TEXT, lambda v: "@/fleet.ico"),
    Option("address", HOST, _host_placeholder, host=True),
    Option("upstream", HOST.map(lambda h: h + ":5100"), lambda v: _host_placeholder(v.rsplit(":", 1)[0]) + ":5100",
           host=True),
    Option("allow_host", HOST.filter(lambda h: ":" not in h), lambda v: "placeholder.example", host=True),
    Option("on_ready", TEXT, lambda v: "fleetplaceholder"),
    Option("include_headers", TEXT, lambda v: "X-Fleet-Placeholder"),
    Option("name", TEXT, lambda v: "fleetname"),
    Option("app", TEXT, lambda v: "fleetapp.py"),
    Option("app_args", TEXT, lambda v: "fleetplaceholder"),
]
FILE_OPTIONS = {"unix_socket", "ssl_certfile", "ssl_keyfile", "control_socket", "log_dir", "state_dir", "ico_path"}
MULTIPLE = {"upstream", "allow_host", "include_headers"}


def _flag(name: str) -> str:
    return {"app": "APP", "app_args": "--args"}.get(name, "--" + name.replace("_", "-"))


# -- building and rendering -----------------------------------------------------------------

@dataclass
class Case:
    option: Option
    raw: str
    config: Config
    placeholder_config: Config
    value: str
    placeholder: str
    files: dict[str, str] = field(default_factory=dict)


def _build(base: Path, cert: tuple[str, str, int], option: Option, raw: str) -> Config:
    # The port is free: nginx -t binds its listeners.
    cli: dict[str, Any] = {"workers": "2", "port": str(cert[2]), "base_port": str(cert[2] + 1), "health_path": "/health",
                           "prefix": "/dash", "ssl_certfile": cert[0], "ssl_keyfile": cert[1],
                           "unix_socket": str(base / "fleet.sock")}
    positional: dict[str, Any] = {"app": APP}
    value = raw.replace("@", str(base), 1) if raw.startswith("@/") else raw
    if option.name in FILE_OPTIONS and not raw.startswith("@/"):
        value = f"{base}/f{raw}x"  # a file under the example's directory, created for the real checks
    if option.name == "app":
        positional["app"] = value
    elif option.name == "app_args":
        positional["app_args"] = (value,)
    else:
        cli[option.name] = (value,) if option.name in MULTIPLE else value
    return build_config(cli, {}, {}, command="config", **positional)


def _shown(config: Config, option: Option) -> str:
    if option.name == "app_args":
        return config.app_args[0]
    value = getattr(config, option.name)
    return value[0] if isinstance(value, tuple) else value


def deployment(config: Config, base: Path) -> Deployment:
    return Deployment(fleet_executable=FLEET, working_directory=str(base), bokeh_static_dir=str(base / "static"),
                      state_dir=config.state_dir or str(base / "state"), **RUN_AS)


def _managed(kind: str) -> Callable[[Config, Deployment], str]:
    def rendered(config: Config, target: Deployment) -> str:
        control = config.control_socket or str(Path(target.working_directory) / "fleet.sock")
        layout = Layout(kind, private_directory(control))
        return Renderer(config, layout, target).text(PlaneModel(config))
    return rendered


RENDER: dict[str, Callable[[Config, Deployment], str]] = {
    kind: (lambda kind: lambda config, target: render(kind, config, target))(kind)
    for kind in ("nginx", "apache", "haproxy", "systemd", "kubernetes", "dockerfile", "compose")
}
RENDER["managed-nginx"] = _managed("nginx")
RENDER["managed-haproxy"] = _managed("haproxy")


# -- "exactly the intended directives" --------------------------------------------------------

def _substitute(text: str, placeholder: str, value: str, transforms: list[Callable[[str], str]]) -> str:
    for transform in transforms:
        if transform(placeholder) != placeholder:
            text = text.replace(transform(placeholder), transform(value))
    return text.replace(placeholder, value)


# How a writer spells a value inside a regular expression: nginx's map (re.escape), Apache's
# RewriteCond for --allow-host (dots and brackets).
NGINX_REGEX: list[Callable[[str], str]] = [re.escape]
APACHE_REGEX: list[Callable[[str], str]] = [lambda s: s.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")]


def _expected(rows: list[tuple[int, str, tuple[str, ...]]], case: Case,
              transforms: list[Callable[[str], str]],
              in_variables: Callable[[int, list[str]], bool] = lambda index, path: False
              ) -> list[tuple[int, str, tuple[str, ...]]]:
    out, path = [], []
    for index, (depth, name, args) in enumerate(rows):
        path = path[:depth] + [name]
        value = case.value.replace("$", NGINX_DOLLAR) if in_variables(index, path) else case.value
        out.append((depth, name, tuple(_substitute(arg, case.placeholder, value, transforms) for arg in args)))
    return out


def _inside_map(index: int, path: list[str]) -> bool:
    return len(path) >= 2 and path[-2] == "map"


def check_nginx(text: str, reference: str, case: Case) -> None:
    got = syntax.flatten(syntax.nginx(text))
    dollar = [row for row in got if row[1] == "geo" and row[2][:1] == ("$fleet_dollar",)]
    assert bool(dollar) == (NGINX_DOLLAR in text)
    got = [row for row in got if not (row[1] == "geo" and row[2][:1] == ("$fleet_dollar",))
           and not (row[0] == 2 and row[1] == "default" and row[2] == ("$",))]
    assert got == _expected(syntax.flatten(syntax.nginx(reference)), case, NGINX_REGEX, _inside_map)


def check_lines(reader: Callable[[str], list[syntax.Directive]],
                transforms: list[Callable[[str], str]]) -> Callable[[str, str, Case], None]:
    def check(text: str, reference: str, case: Case) -> None:
        assert syntax.flatten(reader(text)) == _expected(syntax.flatten(reader(reference)), case, transforms)
    return check


def _argv(config: Config) -> list[str]:
    return fleet_arguments(config, "up")


def check_systemd(text: str, reference: str, case: Case) -> None:
    got = syntax.systemd(text)
    assert [(d.name, [k.name for k in d.block or []]) for d in got] == \
        [(d.name, [k.name for k in d.block or []]) for d in syntax.systemd(reference)]
    exec_start = next(k.args[0] for d in got for k in d.block or [] if k.name == "ExecStart")
    assert syntax.systemd_exec_words(exec_start) == [FLEET, "up", *_argv(case.config)]


def check_kubernetes(text: str, reference: str, case: Case) -> None:
    loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert loaded == objects(case.config, deployment(case.config, Path(case.files["base"])))


def check_compose(text: str, reference: str, case: Case) -> None:
    assert yaml.safe_load(text) == yaml.safe_load(reference)


def check_dockerfile(text: str, reference: str, case: Case) -> None:
    got, ref = syntax.dockerfile(text), syntax.dockerfile(reference)
    assert [i.name for i in got if i.name != "COPY"] == [i.name for i in ref if i.name != "COPY"]
    cmd = next(i for i in got if i.name == "CMD")
    config = case.config
    in_image = {"app": image_path(config.app) if config.app else None,
                "extra_apps": tuple(image_path(app) for app in config.extra_apps)}
    assert json.loads(cmd.rest) == ["fleet", "up", *fleet_arguments(config, "up", **in_image)]
    sources = app_sources(config)
    copies = [i.rest for i in got if i.name == "COPY"][-len(sources):] if sources else []
    for copy, (source, target) in zip(copies, sources):
        words = [syntax.docker_unescape(w) for w in json.loads(copy)] if copy.startswith("[") else copy.split()
        assert words == [source, target]


CHECKS: dict[str, Callable[[str, str, Case], None]] = {
    "nginx": check_nginx, "managed-nginx": check_nginx,
    "apache": check_lines(syntax.apache, APACHE_REGEX),
    "haproxy": check_lines(syntax.haproxy, []), "managed-haproxy": check_lines(syntax.haproxy, []),
    "systemd": check_systemd, "kubernetes": check_kubernetes, "compose": check_compose,
    "dockerfile": check_dockerfile,
}


# -- the real checkers -------------------------------------------------------------------------

CHECKERS = {"nginx": ("nginx", ["-t", "-c"]), "managed-nginx": ("nginx", ["-t", "-c"]),
            "haproxy": ("haproxy", ["-c", "-f"]), "managed-haproxy": ("haproxy", ["-c", "-f"]),
            "apache": ("apache2", ["-t", "-f"]), "systemd": ("systemd-analyze", ["verify"])}


def _unusual(case: Case) -> int:
    return len({ch for ch in case.value if not ch.isalnum()})


def _materialise(case: Case, cert: tuple[str, str, int]) -> None:
    """Create what the file names: state directory, certificate, key, data plane directory."""
    config = case.config
    for directory in (case.files["base"], os.path.dirname(config.unix_socket or "/")):
        os.makedirs(directory, exist_ok=True)
    for directory in (config.state_dir, deployment(config, Path(case.files["base"])).state_dir):
        if directory:
            os.makedirs(directory, exist_ok=True)
    if config.control_socket:
        os.makedirs(private_directory(config.control_socket), exist_ok=True)
    os.makedirs(private_directory(str(Path(case.files["base"]) / "fleet.sock")), exist_ok=True)
    for path, source in ((config.ssl_certfile, cert[0]), (config.ssl_keyfile, cert[1]),
                         (f"{config.ssl_certfile}.key", cert[1])):
        if path and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(source, path)


def real_check(kind: str, texts: list[tuple[Case, str]], cert: tuple[str, str, int], folder: Path) -> int:
    tool, args = CHECKERS[kind]
    binary = require_tool(tool)
    for number, (case, text) in enumerate(texts):
        _materialise(case, cert)
        target = folder / (f"check{number}.service" if kind == "systemd" else f"check{number}.conf")
        target.write_text(text, encoding="utf-8")
        result = subprocess.run([binary, *args, str(target)], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, cwd=case.files["base"])
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "[emerg]" not in output and "[ALERT]" not in output, \
            f"{kind} refused the file for {case.option.name}={case.raw!r}:\n{output}\n--- file ---\n{text}"
    return len(texts)


# -- the property ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """A certificate, its key, and a free port for the listeners."""
    openssl = require_tool("openssl")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "cert.pem.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(keyfile), "-out", str(certfile), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    return str(certfile), str(keyfile), free_port()


def _is_ip_or_none(case: Case) -> bool:
    if not case.option.host:
        return True
    import ipaddress

    host = case.value.rsplit(":", 1)[0] if case.option.name == "upstream" else case.value
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    # nginx -t binds its listeners: only addresses this machine has.
    local = address.is_loopback or address.is_unspecified
    return case.option.name == "upstream" or (case.option.name == "address" and local)


@pytest.mark.parametrize("kind", list(RENDER))
def test_every_option_value_is_refused_or_written_as_one_literal_argument(
        kind: str, tmp_path_factory: pytest.TempPathFactory, cert: tuple[str, str, int]) -> None:
    folder = tmp_path_factory.mktemp(kind)
    accepted: list[tuple[Case, str]] = []
    counts = {"refused": 0, "accepted": 0}
    render_one, check = RENDER[kind], CHECKS[kind]

    # CI runs one fixed set of examples (no flaky outcome); a local run explores new ones each time.
    @settings(max_examples=EXAMPLES_PER_FORMAT, deadline=None, database=None, derandomize=IN_CI,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(option=st.sampled_from(OPTIONS), data=st.data())
    def example(option: Option, data: st.DataObject) -> None:
        raw = data.draw(option.values, label=option.name)
        base = folder / f"e{counts['refused'] + counts['accepted']}"
        try:
            config = _build(base, cert, option, raw)
        except ConfigError as exc:
            counts["refused"] += 1
            message = str(exc)
            assert _flag(option.name) in message, message
            assert "\n" not in message.strip(), message
            return
        if kind.startswith("managed-"):
            # fleet up refuses a data-plane socket path the server cannot bind (HAProxy's limit
            # is 97 bytes) before it writes a file: a refusal, as at parse time.
            control = config.control_socket or str(base / "fleet.sock")
            try:
                Layout(kind.removeprefix("managed-"), private_directory(control)).check_lengths()
            except DataPlaneError as exc:
                counts["refused"] += 1
                assert _flag(option.name) in str(exc), str(exc)
                return
        counts["accepted"] += 1
        value = _shown(config, option)
        if value is None:  # --prefix / is no prefix: nothing of it is written
            return
        reference = _build(base, cert, option, option.placeholder(value))
        placeholder = _shown(reference, option)
        if option.name == "allow_host":
            value, placeholder = host_names((value,))[0], host_names((placeholder,))[0]
        if option.name == "control_socket":  # the managed files live in <socket>.dataplane/
            value, placeholder = private_directory(value), private_directory(placeholder)
        case = Case(option, raw, config, reference, value, placeholder, {"base": str(base)})
        target = deployment(config, base)
        text = render_one(config, target)
        check(text, render_one(reference, deployment(reference, base)), case)
        if kind in CHECKERS and _is_ip_or_none(case):
            accepted.append((case, text))

    example()
    assert counts["refused"] > 50 and counts["accepted"] > 50, counts
    if kind in CHECKERS:
        accepted.sort(key=lambda item: -_unusual(item[0]))
        assert real_check(kind, accepted[:REAL_CHECKS], cert, folder) >= min(REAL_CHECKS, len(accepted)) > 0
