"""What a user may write for networks, hosts and fleet names: the parsers of the trust and
allow rules (pure; imports nothing of fleet).

The option declarations (``fleet.config``) parse with these, and the proxy (``balancer.trust``,
``balancer.allow``) matches requests against what they return, so both sides agree on one
normal form without the configuration importing the proxy:

- ``parse_cidr``: a ``--trusted-proxy`` entry (a CIDR network, one address, or ``unix:``);
- ``validate_host_entry`` / ``validate_origin_entry``: ``--allow-host`` and
  ``--allow-websocket-origin`` entries with Bokeh's rules (``*`` labels, no port means :80,
  ``NAME:*`` for ``--allow-host`` only), and ``split_host_port`` that both the parser and the
  matcher use;
- ``valid_fleet_name``: a ``--name`` (a file name in the runtime directory);
- ``valid_host_id``: a ``--host-id`` (``fleet.hostids`` puts it in session ids and cookies);
- ``parse_target`` / ``parse_resolver``: ``fleet balance --resolve`` and ``--resolver``.
"""

from __future__ import annotations

import ipaddress
import re

LOOPBACK = ("127.0.0.0/8", "::1/128")
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "169.254.0.0/16", "fe80::/10")
# The pseudo-network of peers on fleet's --unix-socket listener (nginx spells it "unix:").
UNIX = "unix:"

_LABEL = re.compile(r"\*|[A-Za-z0-9_-]+|\[[0-9A-Fa-f:.]+\]")
_FLEET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A fleet's control socket is <name>.sock: a name ending so would read as a socket file itself.
_SOCKET_SUFFIX = ".sock"


def parse_cidr(value: str) -> str:
    """Validate a ``--trusted-proxy`` entry (``10.0.0.0/8``, ``192.0.2.7``, ``::1``, ``unix:``)
    and return its normal form; raises ValueError with a readable message."""
    text = str(value).strip()
    if text == UNIX:
        return text
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"not an IP address or CIDR network: {value!r} "
                         f"(e.g. 10.0.0.0/8, 192.0.2.7, ::1, or {UNIX} for --unix-socket peers)") from None


def split_host_port(value: str) -> tuple[str, str | None]:
    """``name[:port]`` -> (name, port or None); ``[v6]:port`` keeps its brackets."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1:]
        return value[: end + 1], (rest[1:] if rest.startswith(":") else None)
    if ":" in value:
        name, port = value.rsplit(":", 1)
        return name, port
    return value, None


def _check_entry(value: str, *, any_port: bool) -> str:
    text = str(value).strip().lower()
    if text == "*":
        return text
    name, port = split_host_port(text)
    if not name:
        raise ValueError(f"empty host in {value!r}")
    if port is not None:
        if port == "*":
            if not any_port:
                raise ValueError(f"{value!r}: Bokeh does not accept ':*' in --allow-websocket-origin; "
                                 f"name the port, or use '*' for any origin")
        elif not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"invalid port in {value!r} (use NAME, NAME:PORT, *.NAME or *)")
    labels = [name] if name.startswith("[") else name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"invalid host in {value!r} (use NAME, NAME:PORT, *.NAME or *)")
    return text


def validate_host_entry(value: str) -> str:
    """An ``--allow-host`` entry, normalised (lowercase); ValueError explains a bad one."""
    return _check_entry(value, any_port=True)


def validate_origin_entry(value: str) -> str:
    """An ``--allow-websocket-origin`` entry as Bokeh's ``create_hosts_allowlist`` accepts it.

    Entries are kept as given (not ``:80``-suffixed), because the same text goes to Bokeh
    workers; a ``scheme://`` prefix is refused since Bokeh would never match it."""
    if "://" in str(value):
        raise ValueError(f"{value!r}: give HOST[:PORT] without a scheme (Bokeh compares host:port only)")
    return _check_entry(value, any_port=False)


def valid_fleet_name(name: str) -> str:
    """A fleet name is a file name in the runtime directory: letters, digits, ``.``, ``_``, ``-``."""
    if not _FLEET_NAME.fullmatch(name) or name.endswith(_SOCKET_SUFFIX):
        raise ValueError(f"not a fleet name: {name!r} (letters, digits, '.', '_', '-'; at most 64; "
                         f"starting with a letter or digit)")
    return name


MAX_HOST_ID = 63  # a DNS label, as a pod name or a host name is
HOST_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,%d})\Z" % (MAX_HOST_ID - 1))


def valid_host_id(value: str) -> str:
    """``value`` if it can name a host in Bokeh session ids and affinity cookies, else ValueError
    saying why: no ``.`` (Bokeh splits signed ids there), a DNS label's characters."""
    text = str(value).strip()
    if "." in text:
        raise ValueError(f"host id {text!r} has a '.', where Bokeh splits signed session ids "
                         f"(use a DNS label such as the pod name, not a dotted name)")
    if not HOST_ID.match(text):
        raise ValueError(f"host id {text!r} must be 1 to {MAX_HOST_ID} letters, digits, '-' or '_', "
                         f"starting with a letter or digit")
    return text


def parse_target(text: str) -> tuple[str, int | None]:
    """``NAME:PORT`` -> (NAME, PORT); ``_svc._proto.NAME`` -> (it, None): an SRV name."""
    value = text.strip()
    if value.startswith("_") and ":" not in value:
        if value.count(".") < 2:
            raise ValueError(f"SRV name {value!r} must read _service._proto.NAME")
        return value, None
    name, _, port_text = value.rpartition(":")
    if not name or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--resolve {value!r} must be NAME:PORT (A/AAAA) or _service._proto.NAME (SRV)")
    if any(c.isspace() for c in name) or len(name) > 253:
        raise ValueError(f"--resolve {value!r}: {name!r} is not a DNS name")
    return name.strip("[]"), int(port_text)


def parse_resolver(text: str) -> tuple[str, int]:
    """``ADDR`` or ``ADDR:PORT`` (``[v6]:PORT``): an IP address, as resolv.conf has them."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else 53
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"--resolver {value!r}: the port must be a number")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--resolver {value!r} must be an IP address (optionally :PORT)") from None
    if not 0 < port < 65536:
        raise ValueError(f"--resolver {value!r}: port out of range")
    return host, port


__all__ = ["HOST_ID", "LOOPBACK", "MAX_HOST_ID", "PRIVATE", "UNIX", "parse_cidr", "split_host_port",
           "valid_fleet_name", "valid_host_id", "validate_host_entry", "validate_origin_entry", "parse_target", "parse_resolver"]
