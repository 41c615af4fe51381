"""Where the ACME state directory keeps what, pure (no I/O): the same names for ``fleet up``,
its proxy processes and ``fleet reload``.

    <state>/accounts/<ca>/account-key.pem        the account's key (one account per CA)
    <state>/certificates/<ca>/<first name>/certificate.pem   key and chain in one file
    <state>/certificates/<ca>/<first name>/lock  held while one fleet orders for these names
    <state>/challenges/http-01/<token>           key authorizations being validated
    <state>/challenges/tls-alpn-01/<name>.pem    TLS-ALPN-01 certificates being validated

Key and chain are one file, replaced by one rename, so a reader never sees a new certificate
with an old key (Python's ``load_cert_chain``, nginx and HAProxy all read a combined PEM).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from fleet.config.sections.acme import AcmeSettings

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def default_state_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/fleet/acme``, else ``~/.local/share/fleet/acme``."""
    data = environ.get("XDG_DATA_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                                                         ".local", "share")
    return os.path.join(data, "fleet", "acme")


def state_dir(acme: "AcmeSettings", environ: Mapping[str, str]) -> str:
    return os.path.abspath(acme.acme_state or default_state_dir(environ))


def ca_slug(directory_url: str) -> str:
    """``https://acme-v02.api.letsencrypt.org/directory`` -> ``acme-v02.api.letsencrypt.org-directory``:
    certificates and accounts of different CAs never mix."""
    rest = directory_url.split("://", 1)[-1]
    return _UNSAFE.sub("-", rest).strip("-.")[:150] or "ca"


def account_key_path(root: str, directory_url: str) -> str:
    return os.path.join(root, "accounts", ca_slug(directory_url), "account-key.pem")


def lineage_dir(root: str, directory_url: str, domains: tuple[str, ...]) -> str:
    return os.path.join(root, "certificates", ca_slug(directory_url), domains[0])


def certificate_path(root: str, directory_url: str, domains: tuple[str, ...]) -> str:
    return os.path.join(lineage_dir(root, directory_url, domains), "certificate.pem")


def challenges_dir(root: str) -> str:
    return os.path.join(root, "challenges")


def managed_certificate(acme: "AcmeSettings", ssl_certfile: str | None,
                        environ: Mapping[str, str]) -> dict[str, str]:
    """With ``--domain`` (and no ``--ssl-certfile``): the TLS settings the proxy runs with, the
    state directory's certificate (which may not exist yet) and the challenge directory it
    answers from; ``{}`` otherwise. ``fleet up`` and ``fleet reload`` apply them alike."""
    if not acme.domain or ssl_certfile:
        return {}
    root = state_dir(acme, environ)
    path = certificate_path(root, acme.acme_directory, acme.domain)
    return {"ssl_certfile": path, "ssl_keyfile": path, "acme_challenges": challenges_dir(root)}


__all__ = ["account_key_path", "ca_slug", "certificate_path", "challenges_dir", "default_state_dir",
           "lineage_dir", "managed_certificate", "state_dir"]
