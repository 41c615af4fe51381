"""The Automatic HTTPS section of fleet's settings.

``--domain NAME`` turns it on: fleet obtains the certificate for the names from an ACME CA
(RFC 8555) and renews it itself (``fleet.acme``). Read as ``config.acme`` by ``fleet up``'s
certificate manager; the proxy only sees the certificate and challenge paths it yields
(``fleet.acme.paths.with_managed_certificate``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.config.declare import UP, option
from fleet.values import parse_file_path, parse_text

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# A DNS name as a CA issues it for HTTP-01/TLS-ALPN-01: letters, digits and hyphens in labels of
# at most 63, no wildcard (only DNS-01 may prove one), at least two labels.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[\x21-\x7e]*)?")


def parse_domain(value: str) -> str:
    """``Dash.Example.com.`` -> ``dash.example.com``; a wildcard, an address or a bad label is refused."""
    text = parse_text(value, "a domain").strip().lower().rstrip(".")
    if text.startswith("*."):
        raise ValueError(f"{text!r}: a wildcard needs the DNS-01 challenge, which fleet does not answer")
    if len(text) > 253 or not _DOMAIN.fullmatch(text) or text.replace(".", "").isdigit():
        raise ValueError(f"{text!r} is not a DNS name (labels of letters, digits and '-', dot-separated)")
    return text


def parse_acme_directory(value: str) -> str:
    text = parse_text(value, "a URL").strip()
    if not _URL.fullmatch(text):
        raise ValueError(f"{text!r}: an ACME directory is an https:// URL")
    return text


def parse_email(value: str) -> str:
    text = parse_text(value, "an email address").strip()
    if not _EMAIL.fullmatch(text):
        raise ValueError(f"{text!r} is not an email address")
    return text


@dataclass(frozen=True)
class AcmeSettings:
    """The Automatic HTTPS section (``config.acme``); frozen."""

    domain: tuple[str, ...] = option(
        (), "--domain", parse=parse_domain, multiple=True, metavar="NAME", commands=UP,
        show_default="none: no automatic HTTPS",
        help="Serve HTTPS for NAME with a certificate fleet obtains and renews from an ACME CA "
             "(repeat for more names on one certificate). HTTP-01 is answered on "
             "--https-redirect-port, TLS-ALPN-01 on --port.",
    )
    acme_directory: str = option(
        LETS_ENCRYPT, "--acme-directory", parse=parse_acme_directory, metavar="URL", commands=UP,
        help="The ACME CA's directory URL (Let's Encrypt; or ZeroSSL, a staging endpoint, step-ca).",
    )
    acme_email: str | None = option(
        None, "--acme-email", parse=parse_email, metavar="ADDRESS", commands=UP, show_default="none",
        help="Contact address given to the CA with the account (expiry warnings, policy changes).",
    )
    acme_ca_root: str | None = option(
        None, "--acme-ca-root", parse=parse_file_path, metavar="FILE", commands=UP,
        show_default="the system's CAs",
        help="Trust this CA certificate (PEM) for the ACME directory's own HTTPS (a private CA).",
    )
    acme_state: str | None = option(
        None, "--acme-state", parse=parse_file_path, metavar="DIR", commands=UP,
        show_default="$XDG_DATA_HOME/fleet/acme, else ~/.local/share/fleet/acme",
        help="Where the account key, certificates and keys are kept (mode 0700; a directory others "
             "can read is refused). Several fleets may share it.",
    )


__all__ = ["LETS_ENCRYPT", "AcmeSettings", "parse_acme_directory", "parse_domain", "parse_email"]
