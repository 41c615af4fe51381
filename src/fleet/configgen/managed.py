"""The extra lines of an nginx or HAProxy configuration that ``fleet up --proxy nginx|haproxy``
runs itself (``fleet.dataplane``), next to what ``fleet config`` writes anyway.

A managed data plane differs from a hand-installed one in four ways, all here:
- its server list is fleet's live one (both port blocks, each server enabled or not), not
  ``-n`` workers from ``--base-port``;
- HAProxy gets an admin stats socket (the runtime API fleet drives); nginx a
  ``worker_shutdown_timeout`` equal to ``--drain-timeout``;
- ``/metrics`` and ``/_fleet/`` reach fleet's master over a unix socket, and the server's own
  metrics are served next to them (HAProxy's Prometheus exporter, nginx ``stub_status``), all
  only to ``--metrics-allow`` peers (others get 404, as from fleet's own proxy);
- everything it writes lives in fleet's private runtime directory.

Pure functions of a ``Managed`` value.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.configgen.common import Upstream, seconds
from fleet.configgen.quoting import haproxy as hq, nginx as nq

# The server's own metrics are served at <--metrics-path>/<kind>: /metrics/haproxy, /metrics/nginx.


@dataclass(frozen=True)
class Managed:
    """What fleet's own data plane needs besides the ``fleet config`` output."""

    directory: str  # private (0700): config, pid file, sockets, temp files, logs
    servers: tuple[Upstream, ...]  # the live list: disabled ones get no new requests
    admin_socket: str  # HAProxy's runtime API (stats socket, level admin)
    fleet_socket: str | None  # fleet's own HTTP listener (metrics, /_fleet/); None: nothing to route
    fleet_paths: tuple[str, ...]  # exact paths (and prefixes ending in /) routed to fleet
    metrics_path: str | None  # where the server's own metrics are served; None: --no-metrics
    metrics_allow: tuple[str, ...]  # who may see fleet_paths and metrics_path
    trusted_proxies: tuple[str, ...]  # whose X-Forwarded-For names the client (nginx: realip)
    drain_timeout: float
    # HAProxy 2.6+: an idle keep-alive client gets one more answer, with Connection: close, from
    # a reloaded HAProxy's old worker instead of a close under its next request.
    idle_close_on_response: bool = False


def own_metrics_path(metrics_path: str, kind: str) -> str:
    return metrics_path.rstrip("/") + "/" + kind


# -- HAProxy ------------------------------------------------------------------------------

def haproxy_global(managed: Managed) -> list[str]:
    return [
        "    # fleet's runtime API socket (add/drain/remove workers), private to fleet's user.",
        f"    stats socket {hq(managed.admin_socket)} mode 600 level admin",
    ]


def _haproxy_terms(managed: Managed) -> list[str]:
    """Anonymous ACLs for fleet's routes: exact paths and prefixes (ending in /)."""
    exact = [p for p in managed.fleet_paths if not p.endswith("/")]
    prefixes = [p for p in managed.fleet_paths if p.endswith("/")]
    terms = []
    if exact:
        terms.append(f"{{ path {' '.join(hq(p) for p in exact)} }}")
    if prefixes:
        terms.append(f"{{ path_beg {' '.join(hq(p) for p in prefixes)} }}")
    return terms


def haproxy_frontend(managed: Managed) -> list[str]:
    reload = ["    # A reload (fleet reload) closes no idle keep-alive connection under a request.",
              "    option idle-close-on-response"] if managed.idle_close_on_response else []
    return reload + _haproxy_guards(managed)


def _haproxy_guards(managed: Managed) -> list[str]:
    routed = _haproxy_terms(managed) if managed.fleet_socket else []
    own = managed.metrics_path
    guarded = [*routed, *([f"{{ path {hq(own)} }}"] if own else [])]
    if not guarded:
        return []
    allow = " ".join(managed.metrics_allow)
    trusted = " ".join(n for n in managed.trusted_proxies if n != "unix:")
    lines = ["    # fleet's built-in routes and HAProxy's own metrics: --metrics-allow peers only, others 404."]
    if allow:
        lines.append(f"    acl fleet_metrics_peer src {allow}")
    if allow and trusted:
        lines += [
            "    # Through a --trusted-proxy the client is the last X-Forwarded-For entry it added.",
            f"    acl fleet_via_trusted src {trusted}",
            "    acl fleet_forwarded req.hdr(X-Forwarded-For) -m found",
            f"    acl fleet_forwarded_peer req.hdr_ip(X-Forwarded-For,-1) {allow}",
        ]
    for term in guarded:
        if not allow:
            lines.append(f"    http-request deny deny_status 404 if {term}")
        elif not trusted:
            lines.append(f"    http-request deny deny_status 404 if {term} !fleet_metrics_peer")
        else:
            lines += [
                f"    http-request deny deny_status 404 if {term} !fleet_via_trusted !fleet_metrics_peer",
                f"    http-request deny deny_status 404 if {term} fleet_via_trusted !fleet_forwarded "
                f"!fleet_metrics_peer",
                f"    http-request deny deny_status 404 if {term} fleet_via_trusted fleet_forwarded "
                f"!fleet_forwarded_peer",
            ]
    if own:
        lines.append(f"    http-request use-service prometheus-exporter if {{ path {hq(own)} }}")
    if routed:
        lines.append(f"    use_backend fleet_master if {' || '.join(routed)}")
    return lines


def haproxy_backends(managed: Managed) -> list[str]:
    if not managed.fleet_socket:
        return []
    return ["", "backend fleet_master", f"    server master {hq('unix@' + managed.fleet_socket)}"]


# -- nginx --------------------------------------------------------------------------------

def nginx_main(managed: Managed) -> list[str]:
    return [
        "# Old nginx workers (after a reload) finish their requests and WebSockets up to fleet's",
        "# --drain-timeout, then close them.",
        f"worker_shutdown_timeout {seconds(max(managed.drain_timeout, 1))}s;",
    ]


def nginx_http(managed: Managed) -> list[str]:
    if not managed.fleet_paths and not managed.metrics_path:
        return []
    return [
        "# --metrics-allow: who may see fleet's built-in routes and nginx's stub_status.",
        "geo $fleet_metrics_peer {",
        "    default 0;",
        *(f"    {network} 1;" for network in managed.metrics_allow),
        "}",
    ]


def nginx_locations(managed: Managed) -> list[str]:
    lines: list[str] = []
    if managed.fleet_socket:
        for path in managed.fleet_paths:
            lines += [
                f"location {'^~ ' if path.endswith('/') else '= '}{nq(path)} {{",
                "    if ($fleet_metrics_peer = 0) { return 404; }",
                f"    proxy_pass {nq(f'http://unix:{managed.fleet_socket}:')};",
                "    proxy_set_header X-Forwarded-For $remote_addr;",
                "}",
            ]
    if managed.metrics_path:
        lines += [
            f"location = {nq(managed.metrics_path)} {{",
            "    if ($fleet_metrics_peer = 0) { return 404; }",
            "    stub_status;",
            "}",
        ]
    return lines


def nginx_servers(managed: Managed) -> list[Upstream]:
    """nginx needs at least one server in an upstream block."""
    if managed.servers:
        return list(managed.servers)
    return [Upstream("none", "unix:" + managed.directory + "/no-worker.sock", 0, disabled=True)]
