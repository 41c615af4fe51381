"""The managed data plane's pure parts: slot states from worker states, what nginx/HAProxy
cannot honour, HAProxy's ``show stat``, the rendered configurations, the private directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fleet.config import ConfigError, build_config
from fleet.configgen.deployment import Deployment
from fleet.dataplane.files import DataPlaneError, Layout, Renderer, make_private, private_directory
from fleet.dataplane.model import MIN_SLOTS, SERVER_STATES, PlaneModel, ServerState, downgrades, parse_stat, refusals, state_command
from fleet.dataplane.process import command, find_binary, parse_haproxy_version
from fleet.statetable import InvalidTransition


def config(**options: str):
    return build_config({"workers": "2", "base_port": "7100", "surge_base_port": "7200", "port": "7000",
                         **options}, {}, {}, app="app.py")


def test_slots_follow_worker_states_through_a_reload() -> None:
    model = PlaneModel(config(proxy="haproxy"))
    assert len(model.slots) == 2 * MIN_SLOTS
    assert model.slots["w0"].port == 7100 and model.slots["s1"].port == 7201
    assert model.update("g1w0", "w0", "starting")
    assert model.slots["w0"].state is ServerState.OFF and not model.nginx_servers()
    assert model.update("g1w0", "w0", "ready")
    assert [s.id for s in model.nginx_servers()] == ["w0"]
    assert not model.update("g1w0", "w0", "ready")  # nothing to change
    # A crash: HAProxy takes it out at once; nginx keeps it listed (its own failure handling).
    model.update("g1w0", "w0", "exited")
    assert model.slots["w0"].state is ServerState.OFF and [s.id for s in model.nginx_servers()] == ["w0"]
    model.update("g1w0", "w0", "ready")
    # Replaced by a reload: drain (nginx: unlisted), then stopped.
    model.update("g2w0", "s0", "ready")
    model.update("g1w0", "w0", "draining")
    assert model.slots["w0"].state is ServerState.DRAINING
    assert [s.id for s in model.nginx_servers()] == ["s0"]
    assert model.slot_of("g1w0") is model.slots["w0"]
    model.update("g1w0", "w0", "stopping")
    model.update("g1w0", "w0", "stopped")
    assert model.slots["w0"].worker_id is None and model.slot_of("g1w0") is None
    servers = {s.id: s for s in model.haproxy_servers()}
    assert servers["w0"].disabled and not servers["s0"].disabled
    assert not model.update("g9w9", "x9", "ready")  # a slot it does not know


def test_a_stale_stop_does_not_clear_the_slot_of_its_successor() -> None:
    model = PlaneModel(config())
    model.update("g1w0", "w0", "ready")
    model.update("g3w0", "w0", "starting")
    model.update("g1w0", "w0", "stopped")
    assert model.slots["w0"].worker_id == "g3w0"


def test_options_nginx_or_haproxy_cannot_honour_are_refused_by_name() -> None:
    assert refusals(config(max_header_count="50")) == []  # the built-in proxy honours everything
    assert refusals(config(proxy="haproxy", max_header_count="50")) == []  # tune.http.maxhdr
    [message] = refusals(config(proxy="nginx", max_header_count="50"))
    assert "--proxy nginx cannot honour --max-header-count" in message
    [message] = refusals(config(proxy="haproxy", min_body_rate="100"))
    assert "--min-body-rate" in message and "--proxy builtin" in message
    assert any("--queue-timeout" in m for m in refusals(config(proxy="nginx", queue_timeout="3")))
    assert refusals(config(proxy="nginx")) == []  # the defaults are documented differences


def test_nginx_says_what_it_does_differently() -> None:
    notes = downgrades(config(proxy="nginx"))
    assert any("--sticky dropped" in note for note in notes)
    assert not any("sticky" in note for note in downgrades(config(proxy="nginx", sticky=False)))
    assert downgrades(config(proxy="haproxy")) == []


def test_proxy_kind_is_checked_and_contradicts_no_proxy() -> None:
    with pytest.raises(ConfigError, match="unknown data plane 'apache'"):
        config(proxy="apache")
    with pytest.raises(ConfigError, match="--proxy nginx and --no-proxy contradict"):
        config(proxy="nginx", no_proxy=True)


STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,status
fleet,FRONTEND,,,3,5,,9,OPEN
fleet_workers,w0,0,0,2,3,,7,DRAIN
fleet_workers,s0,1,1,0,1,,2,UP
fleet_workers,BACKEND,0,0,2,3,,9,UP
fleet_master,master,0,0,0,0,,0,UP

"""


def test_show_stat_gives_sessions_and_queue_per_fleet_server() -> None:
    loads = parse_stat(STAT)
    assert set(loads) == {"w0", "s0"}
    assert (loads["w0"].sessions, loads["w0"].queued, loads["w0"].status) == (2, 0, "DRAIN")
    assert loads["s0"].queued == 1
    assert state_command("w0", ServerState.DRAINING) == "set server fleet_workers/w0 state drain"


def renderer(tmp_path: Path, kind: str, **options: str) -> Renderer:
    return Renderer(config(proxy=kind, **options), Layout(kind, str(tmp_path / "plane")), Deployment())


def test_the_haproxy_configuration_is_fleet_configs_with_the_managed_parts(tmp_path: Path) -> None:
    model = PlaneModel(config())
    model.update("g1w0", "w0", "ready")
    text = renderer(tmp_path, "haproxy").text(model)
    assert f"stats socket {tmp_path}/plane/admin.sock mode 600 level admin" in text
    assert f"pidfile {tmp_path}/plane/haproxy.pid" in text
    assert "server w0 127.0.0.1:7100 cookie w0\n" in text
    assert "server w1 127.0.0.1:7101 cookie w1 disabled" in text
    assert "default-server check" not in text  # fleet drives the states
    assert "http-request use-service prometheus-exporter if { path /metrics/haproxy }" in text
    assert "acl fleet_metrics_peer src 127.0.0.0/8" in text
    assert f"server master unix@{tmp_path}/plane/fleet-http.sock" in text
    assert "user haproxy" not in text
    no_metrics = renderer(tmp_path, "haproxy", no_metrics=True).text(model)
    assert "prometheus-exporter" not in no_metrics and "path_beg /_fleet/" in no_metrics


def test_the_nginx_configuration_lists_only_servers_nginx_may_use(tmp_path: Path) -> None:
    model = PlaneModel(config())
    text = renderer(tmp_path, "nginx").text(model)
    assert "no-worker.sock max_fails=1 fail_timeout=2s down;" in text  # nginx needs one server
    model.update("g1w0", "w0", "ready")
    model.update("g1w1", "w1", "draining")
    text = renderer(tmp_path, "nginx", drain_timeout="90").text(model)
    assert "server 127.0.0.1:7100 " in text and "127.0.0.1:7101" not in text
    assert "worker_shutdown_timeout 90s;" in text
    assert "error_log stderr" in text and f"pid {tmp_path}/plane/nginx.pid;" in text
    assert "location = /metrics/nginx {" in text and "stub_status;" in text
    assert f"proxy_pass http://unix:{tmp_path}/plane/fleet-http.sock:;" in text
    assert "location ^~ /_fleet/ {" in text
    assert f"proxy_temp_path {tmp_path}/plane/proxy_temp;" in text


def test_the_private_directory_is_made_afresh_and_only_for_its_owner(tmp_path: Path) -> None:
    assert private_directory(str(tmp_path / "28006.sock")) == str(tmp_path / "28006.dataplane")
    target = tmp_path / "28006.dataplane"
    target.mkdir(mode=0o755)
    (target / "stale.pid").write_text("1")
    make_private(str(target))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700 and not list(target.iterdir())
    link = tmp_path / "link.dataplane"
    link.symlink_to(target)
    with pytest.raises(DataPlaneError, match="not a directory"):
        make_private(str(link))
    with pytest.raises(DataPlaneError, match="longer than"):
        Layout("haproxy", "/tmp/" + "x" * 120).check_lengths()


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataPlaneError, match="the nginx binary is not installed.*apt-get install nginx-light"):
        find_binary("nginx", search_path=str(tmp_path))


def test_the_servers_run_in_the_foreground_with_the_private_files() -> None:
    layout = Layout("nginx", "/run/fleet/x.dataplane")
    assert command("nginx", "/usr/sbin/nginx", layout) == [
        "/usr/sbin/nginx", "-p", "/run/fleet/x.dataplane/", "-e", "stderr", "-c",
        "/run/fleet/x.dataplane/nginx.conf", "-g", "daemon off;"]
    assert command("haproxy", "haproxy", Layout("haproxy", "/d"), test=True) == [
        "haproxy", "-f", "/d/haproxy.conf", "-c"]


def test_the_server_state_table_is_walked_and_staying_put_is_no_move() -> None:
    V = ServerState
    expected = {(V.OFF, V.READY), (V.OFF, V.DRAINING), (V.READY, V.OFF), (V.READY, V.DRAINING),
                (V.DRAINING, V.OFF)}
    for current, target, allowed in SERVER_STATES.walk():
        assert allowed == ((current, target) in expected), (current, target)
        if not allowed:
            with pytest.raises(InvalidTransition, match="data-plane server cannot go"):
                SERVER_STATES.move(current, target)


def test_a_draining_slot_is_never_made_ready_without_going_off_first() -> None:
    model = PlaneModel(config())
    model.update("g1w0", "w0", "ready")
    model.update("g1w0", "w0", "draining")
    with pytest.raises(InvalidTransition):
        model.update("g1w0", "w0", "ready")  # a draining worker never serves again: a fleet bug
    assert model.update("g1w0", "w0", "stopping") and model.slots["w0"].state is ServerState.OFF
    assert not model.update("g1w0", "w0", "exited")  # OFF again: no move, nothing to do


def test_haproxy_runs_in_master_worker_mode_and_keeps_idle_clients_across_a_reload(tmp_path: Path) -> None:
    """Master-worker (-W): a reload (SIGUSR2) keeps the master and its listening sockets; from
    HAProxy 2.6 an idle keep-alive client of the old worker gets one more answer, not a close."""
    assert command("haproxy", "haproxy", Layout("haproxy", "/d")) == ["haproxy", "-f", "/d/haproxy.conf", "-W", "-db"]
    assert command("haproxy", "haproxy", Layout("haproxy", "/d"), test=True, path="/d/x.check") == [
        "haproxy", "-f", "/d/x.check", "-c"]
    assert parse_haproxy_version("HAProxy version 2.6.12-1+deb12u4 2026/10/17") == (2, 6)
    assert parse_haproxy_version("HA-Proxy version 1.8.19 2019/02/11") == (1, 8)
    assert parse_haproxy_version("nonsense") == (0, 0)
    model = PlaneModel(config())
    model.update("g1w0", "w0", "ready")
    plain = renderer(tmp_path, "haproxy").text(model)
    layout = Layout("haproxy", str(tmp_path / "plane"))
    newer = Renderer(config(proxy="haproxy"), layout, Deployment(), idle_close_on_response=True).text(model)
    assert "idle-close-on-response" not in plain
    frontend = newer[newer.index("frontend fleet"):]
    assert "    option idle-close-on-response" in frontend[:frontend.index("backend")]
