"""Rendering of ``fleet config nginx|apache|haproxy|systemd`` (pure: Config + Deployment -> text),
the deploy/ copies staying in sync, and what ``Deployment`` finds on this machine.

The servers themselves run these configurations in ``test_configgen_servers.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.cli import up as up_command
from fleet.config import Config, build_config
from fleet.configgen import RENDERERS, Deployment, detect, render
from fleet.configgen.common import fleet_arguments, host_names, nginx_size, upstreams
from fleet.configgen.deployment import STATE_DIR_ENV, fleet_executable
from fleet.configgen.haproxy import bufsize
from fleet.configgen.refresh import DEPLOY_FILES, stale_files
from fleet.configgen.systemd import quote_word
from support import EXAMPLES, ROOT
from up_helpers import run_cli

TORNADO_APP = str(EXAMPLES / "tornado_hello.py")
BOKEH_APP = str(EXAMPLES / "bokeh_random")
TARGET = Deployment(fleet_executable="/usr/local/bin/fleet", working_directory="/srv/app")
BOKEH_TARGET = Deployment(bokeh_static_dir="/opt/bokeh/static")


def config(app: str = "app.py", **cli: Any) -> Config:
    cli.setdefault("workers", "3")
    return build_config(cli, {}, {}, command="config", app=app)


def lines(text: str) -> list[str]:
    """Non-comment lines with surrounding space removed."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


# -- shared pieces ---------------------------------------------------------------------------

def test_upstreams_are_the_workers_unless_upstream_entries_are_given() -> None:
    assert [u.address for u in upstreams(config(workers="3", base_port="7000"))] == [
        "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    listed = upstreams(config(upstream=("10.0.0.5:5100", "[::1]:5101")))
    assert [(u.id, u.address) for u in listed] == [("w0", "10.0.0.5:5100"), ("w1", "[::1]:5101")]


def test_sizes_are_spelled_the_way_nginx_reads_them() -> None:
    assert [nginx_size(n) for n in (64 * 1024, 100 * 1024 * 1024, 2 * 1024**3, 1000)] == ["64k", "100m", "2g", "1000"]


def test_allowed_hosts_lose_their_ports() -> None:
    assert host_names(("example.com:8443", "example.com", "[::1]:80", "a.b")) == ["example.com", "[::1]", "a.b"]


def test_fleet_arguments_write_only_what_differs_from_the_defaults() -> None:
    cfg = config(port="8000", max_body_size="1GiB", sticky=False, upstream_timeout="2.5",
                 allow_websocket_origin=("a.com", "b.com"))
    assert fleet_arguments(cfg) == [
        "app.py", "-n", "3", "--port", "8000", "--no-sticky", "--max-body-size", "1GiB",
        "--upstream-timeout", "2.5", "--allow-websocket-origin", "a.com", "--allow-websocket-origin", "b.com"]


def test_every_kind_renders_the_same_text_twice() -> None:
    cfg = config(BOKEH_APP)
    for kind in RENDERERS:
        assert render(kind, cfg, BOKEH_TARGET) == render(kind, cfg, BOKEH_TARGET)


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown configuration kind 'lighttpd'"):
        render("lighttpd", config(), TARGET)


# -- nginx ---------------------------------------------------------------------------------

def test_nginx_balances_least_conn_over_every_worker_with_keepalive() -> None:
    text = render("nginx", config(base_port="5100"), TARGET)
    body = lines(text)
    upstream = body[body.index("upstream fleet_workers {"):]
    assert "least_conn;" in upstream and "keepalive 32;" in upstream
    for port in (5100, 5101, 5102):
        assert f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;  # w{port - 5100}" in upstream
    assert body[0].startswith("user ") and "events {" in body and "http {" in body


def test_nginx_affinity_cookie_picks_a_per_worker_upstream_with_the_others_as_backup() -> None:
    text = render("nginx", config(base_port="5100", prefix="/dash"), TARGET)
    body = lines(text)
    assert "cannot" not in text  # the old claim that open-source nginx has no sticky least_conn
    pool = body[body.index("map $fleet_route $fleet_pool {"):]
    assert pool[1:5] == ["default fleet_workers;", "w0 fleet_w0;", "w1 fleet_w1;", "w2 fleet_w2;"]
    worker = body[body.index("map $upstream_addr $fleet_worker {"):]
    assert worker[1:5] == ['default "";', r'"~(^|\s)127\.0\.0\.1:5100$" w0;',
                           r'"~(^|\s)127\.0\.0\.1:5101$" w1;', r'"~(^|\s)127\.0\.0\.1:5102$" w2;']
    cookie = body[body.index('map "$cookie_fleet_affinity|$fleet_worker" $fleet_set_cookie {'):]
    assert cookie[1] == 'default "fleet_affinity=$fleet_worker; Path=/dash; HttpOnly; SameSite=Lax";'
    one = body[body.index("upstream fleet_w1 {"):]
    assert one[1:7] == ["zone fleet_w1 64k;", "server 127.0.0.1:5101 max_fails=1 fail_timeout=2s;",
                        "server 127.0.0.1:5100 max_fails=1 fail_timeout=2s backup;  # w0",
                        "server 127.0.0.1:5102 max_fails=1 fail_timeout=2s backup;  # w2", "keepalive 16;", "}"]
    location = body[body.index("location / {"):]
    assert location[1:3] == ["proxy_pass http://$fleet_pool;", "add_header Set-Cookie $fleet_set_cookie;"]


def test_nginx_affinity_regex_names_the_last_address_tried() -> None:
    """The map's patterns, read by Python's re (PCRE agrees here): the last of several tries
    wins, and 5100 never matches 15100 or 51000."""
    body = lines(render("nginx", config(base_port="5100", upstream=("10.0.0.5:5100", "110.0.0.5:5100")), TARGET))
    worker = body[body.index("map $upstream_addr $fleet_worker {") + 2:][:2]
    patterns = {line.split('"')[1][1:]: line.split()[-1].rstrip(";") for line in worker}
    def slot(addr: str) -> list[str]:
        return [name for pattern, name in patterns.items() if re.search(pattern, addr)]
    assert slot("10.0.0.5:5100") == ["w0"] and slot("110.0.0.5:5100") == ["w1"]
    assert slot("110.0.0.5:5100, 10.0.0.5:5100") == ["w0"]
    assert slot("10.0.0.5:51000") == [] and slot("10.0.0.5:5100 : 110.0.0.5:5100") == ["w1"]
    cookie = body[body.index('map "$cookie_fleet_affinity|$fleet_worker" $fleet_set_cookie {'):][2:4]
    same, none = (line.split('"')[1][1:] for line in cookie)
    assert re.search(same, "w1|w1") and not re.search(same, "w0|w1") and not re.search(same, ".w1|w1")
    assert re.search(none, "w1|") and not re.search(none, "|w1")


def test_nginx_without_sticky_or_with_one_worker_has_no_affinity_and_tls_keeps_hsts() -> None:
    for cfg in (config(sticky=False), config(workers="1")):
        text = render("nginx", cfg, TARGET)
        assert "$fleet_pool" not in text and "proxy_pass http://fleet_workers;" in text
    cert = {"ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem", "hsts": "600"}
    body = lines(render("nginx", config(**cert), TARGET))
    location = body[body.index("location / {"):]
    # an add_header in a location hides the server's: HSTS must be repeated there
    assert location[2:4] == ['add_header Set-Cookie $fleet_set_cookie;',
                             'add_header Strict-Transport-Security "max-age=600" always;']
    assert any(line.endswith('SameSite=Lax; Secure";') for line in body)


def test_nginx_proxies_websockets_and_forwarded_headers_without_buffering() -> None:
    body = lines(render("nginx", config(), TARGET))
    for directive in (
        "map $http_upgrade $connection_upgrade {",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_buffering off;",
        "large_client_header_buffers 4 64k;",
        "client_max_body_size 100m;",
        "proxy_read_timeout 60s;",
        "listen 127.0.0.1:5006;",
    ):
        assert directive in body, directive


def test_nginx_follows_the_size_and_timeout_options() -> None:
    body = lines(render("nginx", config(max_header_size="128KiB", max_body_size="5MiB",
                                        upstream_timeout="90", use_xheaders=True), TARGET))
    assert "large_client_header_buffers 4 128k;" in body
    assert "client_max_body_size 5m;" in body and "proxy_read_timeout 90s;" in body
    assert "proxy_set_header X-Forwarded-For $fleet_forwarded_for;" in body  # --use-xheaders: trusted peers


def test_nginx_serves_bokeh_static_files_only_for_a_bokeh_app() -> None:
    assert "alias /opt/bokeh/static/;" in lines(render("nginx", config(BOKEH_APP), BOKEH_TARGET))
    assert "location /static/ {" not in lines(render("nginx", config(TORNADO_APP), TARGET))


def test_nginx_tls_adds_hsts_and_a_redirect_server() -> None:
    cfg = config(port="443", ssl_certfile="/etc/tls/c.pem", ssl_keyfile="/etc/tls/k.pem",
                 https_redirect_port="80", hsts="63072000")
    body = lines(render("nginx", cfg, TARGET))
    assert "listen 127.0.0.1:443 ssl;" in body
    assert "ssl_certificate /etc/tls/c.pem;" in body and "ssl_certificate_key /etc/tls/k.pem;" in body
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in body
    assert "listen 127.0.0.1:80;" in body and "return 301 https://$host$request_uri;" in body


def test_nginx_listens_on_the_unix_socket_too() -> None:
    body = lines(render("nginx", config(unix_socket="/run/fleet.sock"), TARGET))
    assert "listen unix:/run/fleet.sock;" in body and "listen 127.0.0.1:5006;" in body


def test_nginx_state_dir_moves_pid_logs_and_temp_files() -> None:
    body = lines(render("nginx", config(), Deployment(state_dir="/var/tmp/ng")))
    assert "pid /var/tmp/ng/nginx.pid;" in body
    assert "error_log /var/tmp/ng/error.log notice;" in body
    assert "proxy_temp_path /var/tmp/ng/proxy_temp;" in body
    assert not any(line.startswith("user ") for line in body)
    system = lines(render("nginx", config(), TARGET))
    assert "pid /run/nginx.pid;" in system and "user www-data;" in system


def test_nginx_allow_host_refuses_other_hosts_with_421() -> None:
    body = lines(render("nginx", config(allow_host=("example.com:80", "www.example.com")), TARGET))
    assert "listen 127.0.0.1:5006 default_server;" in body and "return 421;" in body
    assert "server_name example.com www.example.com;" in body


# -- Apache --------------------------------------------------------------------------------

def test_apache_has_http_and_ws_balancers_by_busyness_and_a_websocket_rewrite() -> None:
    body = lines(render("apache", config(base_port="5100"), TARGET))
    for port in (5100, 5101, 5102):
        assert f'BalancerMember "http://127.0.0.1:{port}" route=w{port - 5100} retry=1 connectiontimeout=5' in body
        assert f'BalancerMember "ws://127.0.0.1:{port}" route=w{port - 5100} retry=1 connectiontimeout=5' in body
    assert body.count("ProxySet lbmethod=bybusyness stickysession=fleet_affinity") == 2
    for directive in (
        "RewriteEngine On",
        "RewriteCond %{HTTP:Upgrade} websocket [NC]",
        'RewriteRule ^/?(.*) "balancer://fleet_ws/$1" [P,L]',
        'ProxyPass "/" "balancer://fleet_http/" nocanon',
        "ProxyPreserveHost On",
        'RequestHeader set X-Forwarded-Proto "http"',
        "LimitRequestFieldSize 65536",
        "Listen 127.0.0.1:5006",
    ):
        assert directive in body, directive


def test_apache_loads_every_module_it_uses_from_the_modules_dir() -> None:
    body = lines(render("apache", config(BOKEH_APP, ssl_certfile="/c.pem", ssl_keyfile="/k.pem"), BOKEH_TARGET))
    loaded = {line.split()[1]: line.split()[2] for line in body if line.startswith("LoadModule")}
    for module in ("mpm_event", "authz_core", "proxy", "proxy_http", "proxy_wstunnel", "proxy_balancer",
                   "lbmethod_bybusyness", "slotmem_shm", "rewrite", "headers", "ssl", "socache_shmcb",
                   "alias", "mime"):
        assert loaded[f"{module}_module"] == f"/usr/lib/apache2/modules/mod_{module}.so"


def test_apache_tls_sets_proto_https_hsts_and_redirects_plain_http() -> None:
    body = lines(render("apache", config(port="8443", ssl_certfile="/c.pem", ssl_keyfile="/k.pem",
                                         https_redirect_port="80", hsts="63072000"), TARGET))
    assert "SSLEngine on" in body and 'RequestHeader set X-Forwarded-Proto "https"' in body
    assert 'Header always set Strict-Transport-Security "max-age=63072000"' in body
    assert "Listen 127.0.0.1:80" in body and "RewriteRule ^/?(.*) https://%1:8443/$1 [R=301,L]" in body
    assert ('Header add Set-Cookie "fleet_affinity=.%{BALANCER_WORKER_ROUTE}e; Path=/; HttpOnly; '
            'SameSite=Lax; Secure" env=BALANCER_ROUTE_CHANGED') in body


def test_apache_cookie_path_follows_the_prefix_and_extensions_go_to_the_workers() -> None:
    body = lines(render("apache", config(BOKEH_APP, prefix="/dash"), BOKEH_TARGET))
    assert any('fleet_affinity=.%{BALANCER_WORKER_ROUTE}e; Path=/dash; HttpOnly; SameSite=Lax"' in line
               for line in body)
    proxied = [line for line in body if line.startswith("ProxyPass ")]
    assert proxied[:3] == [
        'ProxyPass "/dash/static/extensions/" "balancer://fleet_http/dash/static/extensions/" nocanon',
        'ProxyPass "/dash/static/" !',  # the first match wins: extensions/ before the files
        'ProxyPass "/" "balancer://fleet_http/" nocanon',
    ]


def test_apache_says_it_cannot_serve_the_unix_socket() -> None:
    text = render("apache", config(unix_socket="/run/fleet.sock"), TARGET)
    assert "Apache cannot listen on a unix socket" in text and "unix:" not in "".join(lines(text))


# -- HAProxy -------------------------------------------------------------------------------

def test_haproxy_balances_leastconn_with_tcp_checks_by_default() -> None:
    body = lines(render("haproxy", config(base_port="5100"), TARGET))
    assert "balance leastconn" in body and "default-server check inter 2s fall 2 rise 1" in body
    assert "option httpchk" not in body
    assert "server w1 127.0.0.1:5101 cookie w1" in body
    for directive in ("timeout tunnel 3600s", "option forwardfor", "timeout server 60s",
                      "http-request set-header X-Forwarded-Proto http unless { req.hdr(X-Forwarded-Proto) -m found }"):
        assert directive in body, directive
    assert f"tune.bufsize {bufsize(64 * 1024)}" in body and bufsize(64 * 1024) > 64 * 1024 + 1024


def test_haproxy_probes_the_health_path_when_given() -> None:
    body = lines(render("haproxy", config(health_path="/healthz", sticky=False), TARGET))
    assert "option httpchk" in body
    assert "http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host localhost" in body
    assert "server w0 127.0.0.1:5100" in body  # no cookie without --sticky


def test_haproxy_tls_binds_with_the_certificate_and_redirects() -> None:
    cfg = config(ssl_certfile="/etc/tls/c.pem", ssl_keyfile="/etc/tls/k.pem")
    text = render("haproxy", cfg, TARGET)
    assert "bind 127.0.0.1:5006 ssl crt /etc/tls/c.pem alpn http/1.1" in lines(text)
    assert "ln -s /etc/tls/k.pem /etc/tls/c.pem.key" in text  # HAProxy's key lookup, spelled out
    assert "cookie fleet_affinity insert indirect nocache httponly secure attr SameSite=Lax" in lines(text)


# -- systemd -------------------------------------------------------------------------------

def _exec_start_words(unit: str) -> list[str]:
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):].replace("$$", "$").replace("%%", "%"))


def test_systemd_unit_restarts_reloads_and_stops_gracefully() -> None:
    unit = render("systemd", config(graceful_timeout="20"), TARGET)
    for line in ("Restart=on-failure", "KillSignal=SIGTERM", "KillMode=mixed", "TimeoutStopSec=35",
                 "WorkingDirectory=/srv/app", "ExecReload=/bin/kill -HUP $MAINPID", "WantedBy=multi-user.target"):
        assert line in unit.splitlines(), line
    assert _exec_start_words(unit)[:3] == ["/usr/local/bin/fleet", "up", "app.py"]


def test_systemd_exec_start_parses_back_into_the_same_config() -> None:
    original = build_config(
        {"workers": "4", "port": "8080", "cmd": "gunicorn -b 127.0.0.1:$PORT 'app:make(\"x\")' 100%",
         "max_memory": "512MiB", "sticky": False, "allow_host": ("a.example", "b.example"),
         "graceful_timeout": "12.5"}, {}, {}, command="up")
    words = _exec_start_words(render("systemd", original, TARGET))
    assert words[:2] == ["/usr/local/bin/fleet", "up"]
    context = up_command.make_context("up", words[2:])
    from fleet.cli import _make_config

    assert _make_config(context, "up", app=context.params["app"], app_args=context.params["app_args"]) == original


def test_systemd_words_escape_dollar_percent_and_quotes() -> None:
    assert quote_word("plain") == "plain"
    assert quote_word("$PORT") == "$$PORT"
    assert quote_word('a "b" 5%') == '"a \\"b\\" 5%%"'


# -- Docker --------------------------------------------------------------------------------

def test_compose_file_parses_and_mounts_the_existing_prometheus_config() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the bokeh extra
    compose = yaml.safe_load(render("compose", config(BOKEH_APP, address="0.0.0.0"), TARGET))
    fleet, prometheus = compose["services"]["fleet"], compose["services"]["prometheus"]
    assert fleet["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
    assert "5006:5006" in fleet["ports"] and fleet["stop_grace_period"] == "45s"
    assert prometheus["network_mode"] == "service:fleet"
    for volume in prometheus["volumes"]:
        assert (ROOT / "deploy" / "docker" / volume.split(":")[0]).resolve().is_file(), volume


def test_dockerfile_copies_paths_that_exist_and_runs_fleet_up() -> None:
    text = render("dockerfile", config("examples/bokeh_random", address="0.0.0.0"), TARGET)
    copies = [line.split()[1:-1] for line in text.splitlines()
              if line.startswith("COPY ") and not line.startswith("COPY --from=")]  # from the build stage
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert ["examples/bokeh_random"] in copies
    assert 'CMD ["fleet", "up", "/srv/app/bokeh_random", "-n", "3", "--address", "0.0.0.0"]' in text


# -- deploy/ stays in sync -----------------------------------------------------------------

def test_deploy_copies_match_a_fresh_rendering() -> None:
    assert stale_files(str(ROOT)) == [], "run: python -m fleet.configgen.refresh"


def test_deploy_copies_hold_no_machine_paths() -> None:
    for item in DEPLOY_FILES:
        text = (ROOT / item.path).read_text()
        for machine_path in (str(ROOT), "/tmp/", "/home/", "/root/", sys.prefix):
            assert machine_path not in text, (item.path, machine_path)


def test_refresh_check_reports_an_edited_copy(tmp_path: Path) -> None:
    from fleet.configgen.refresh import main, write_all

    assert sorted(write_all(str(tmp_path))) == sorted(item.path for item in DEPLOY_FILES)
    assert main([str(tmp_path), "--check"]) == 0
    (tmp_path / "deploy/nginx/fleet.conf").write_text("# edited\n")
    assert main([str(tmp_path), "--check"]) == 1


# -- what detect() finds -------------------------------------------------------------------

def test_detect_finds_bokeh_static_files_for_a_bokeh_app_only(tmp_path: Path) -> None:
    bokeh_paths = pytest.importorskip("bokeh.util.paths")
    found = detect(config(BOKEH_APP), environ={}, cwd=str(tmp_path))
    assert found.bokeh_static_dir == str(bokeh_paths.static_path())
    assert found.working_directory == str(tmp_path) and found.state_dir is None
    assert detect(config(TORNADO_APP), environ={}).bokeh_static_dir is None
    missing = detect(config("nowhere.py"), environ={})
    assert missing.bokeh_static_dir is None and "APP not found" in (missing.note or "")


def test_detect_takes_the_state_dir_from_the_environment(tmp_path: Path) -> None:
    assert detect(config(), environ={STATE_DIR_ENV: str(tmp_path)}).state_dir == str(tmp_path)


def test_fleet_executable_is_the_running_installation(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "fleet"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert fleet_executable(str(script), "/usr/bin/python3", None) == str(script)
    python = tmp_path / "bin" / "python"
    assert fleet_executable("-m", str(python), None) == str(script)  # python -m fleet in a venv
    assert fleet_executable("-m", "/nowhere/python", None) == "/nowhere/python -m fleet"


def test_fleet_config_command_prints_or_writes_the_rendering(tmp_path: Path) -> None:
    printed = run_cli("config", "haproxy", TORNADO_APP, "-n", "2", "--health-path", "/ok")
    assert printed.returncode == 0, printed.stderr
    assert "balance leastconn" in printed.stdout and "uri /ok" in printed.stdout
    target = tmp_path / "fleet.conf"
    written = run_cli("config", "nginx", TORNADO_APP, "-n", "2", "--upstream", "10.1.1.1:80", "-o", str(target))
    assert written.returncode == 0 and written.stdout == ""
    assert "server 10.1.1.1:80 max_fails=1 fail_timeout=2s;  # w0" in target.read_text()


def test_tls_without_hsts_or_redirect_options_has_neither() -> None:
    cfg = config(ssl_certfile="/etc/tls/c.pem", ssl_keyfile="/etc/tls/k.pem")
    for kind in ("nginx", "apache", "haproxy"):
        text = render(kind, cfg, TARGET)
        assert "Strict-Transport-Security" not in text and "redirect" not in text.lower().replace(
            "redirects to", ""), kind


def test_client_forwarding_claims_are_dropped_unless_a_trusted_proxy_sent_them() -> None:
    plain = lines(render("nginx", config(), TARGET))
    assert 'proxy_set_header X-Scheme "";' in plain and 'proxy_set_header Forwarded "";' in plain
    trusted = lines(render("nginx", config(trusted_proxy=("10.0.0.0/8",)), TARGET))
    assert "set_real_ip_from 10.0.0.0/8;" in trusted and "real_ip_recursive on;" in trusted
    assert "proxy_set_header X-Scheme $fleet_claim_x_scheme;" in trusted
    haproxy = lines(render("haproxy", config(trusted_proxy=("10.0.0.0/8",)), TARGET))
    assert "http-request del-header X-Scheme unless { src 10.0.0.0/8 }" in haproxy
    assert "http-request del-header X-Scheme" in lines(render("haproxy", config(), TARGET))
    apache = lines(render("apache", config(trusted_proxy=("10.0.0.0/8",)), TARGET))
    assert "RequestHeader unset X-Scheme \"expr=!(-R '10.0.0.0/8')\"" in apache
    assert "RequestHeader unset X-Scheme early" in lines(render("apache", config(), TARGET))
