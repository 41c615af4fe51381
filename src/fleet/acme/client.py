"""The ACME conversation (RFC 8555) with certbot's ``acme`` library: account, order,
challenges, finalisation, the certificate written to the state directory.

Blocking (``requests`` underneath): ``obtain`` runs in a thread of its own (``manager``), each
HTTP call bounded by ``NETWORK_TIMEOUT`` and the whole order by ``ORDER_DEADLINE``. Why the
``acme`` library: it is the client Let's Encrypt's own certbot runs, kept in step with the CAs
(RFC 8555, ARI), and signs every request (JWS) with ``josepy``; fleet writes no JWS itself.
The library dropped TLS-ALPN-01 helpers in 3.0, so the challenge type is registered here and its
certificate (RFC 8737: the ``acmeIdentifier`` extension) is made with ``cryptography``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
from dataclasses import dataclass, field

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from fleet import __version__
from fleet.acme import paths, store
from fleet.acme.policy import HTTP01, TLS_ALPN01, Lifetime, challenge_order, is_due

NETWORK_TIMEOUT = 30  # seconds per HTTP request to the CA
ORDER_DEADLINE = 120.0  # seconds for validation and finalisation together
LOCK_WAIT = 300.0  # another fleet ordering for the same names: wait this long for it
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    typ = TLS_ALPN01


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = TLS_ALPN01

    def validation(self, account_key: jose.JWK, **unused: object) -> str:
        return self.key_authorization(account_key)


if TLS_ALPN01 not in challenges.Challenge.TYPES:
    challenges.ChallengeResponse.register(TLSALPN01Response)
    challenges.Challenge.register(TLSALPN01)


@dataclass(frozen=True)
class OrderRequest:
    directory: str
    domains: tuple[str, ...]
    email: str | None
    ca_root: str | None
    state: str  # the state directory
    http_listener: bool  # HTTP-01 can be answered (--https-redirect-port)
    last_failed: str | None = None  # the challenge that failed last time: tried second now


@dataclass(frozen=True)
class Obtained:
    pem: bytes  # key and chain
    lifetime: Lifetime
    ordered: bool  # False: another fleet sharing the state directory had just renewed it
    challenge: str | None = None
    ari_time: float | None = None  # the CA's suggested renewal time (RFC 9773), if it has ARI


@dataclass
class OrderFailed(Exception):
    """The CA refused, or could not be reached; ``problem``: its problem document (RFC 7807)."""

    message: str
    problem: dict[str, object] = field(default_factory=dict)
    challenge: str | None = None
    refused: bool = True  # the CA answered no (vs. a network error or a timeout)

    def __str__(self) -> str:
        return self.message


def _problem(error: messages.Error) -> dict[str, object]:
    document = {k: v for k, v in error.to_partial_json().items() if k in {"type", "title", "detail", "status"}}
    if error.subproblems:
        document["subproblems"] = [_problem(sub) for sub in error.subproblems]
    return document


def _account_key(state: str, directory: str, stop: threading.Event) -> jose.JWKEC:
    path = paths.account_key_path(state, directory)
    with store.locked(path + ".lock", stop, LOCK_WAIT):
        pem = store.read_private(path)
        if pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            store.write_private(path, pem)
    return jose.JWKEC(key=serialization.load_pem_private_key(pem, None))


def _client(request: OrderRequest, stop: threading.Event) -> client.ClientV2:
    key = _account_key(request.state, request.directory, stop)
    verify: bool | str = request.ca_root or True
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=verify,  # type: ignore[arg-type]
                               user_agent=f"fleet/{__version__}", timeout=NETWORK_TIMEOUT)
    acme = client.ClientV2(client.ClientV2.get_directory(request.directory, net), net)
    registration = messages.NewRegistration.from_data(email=request.email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as known:  # this key has an account already: use it
        net.account = messages.RegistrationResource(uri=known.location, body=messages.Registration())
    return acme


def alpn_certificate(domain: str, key_authorization: str) -> bytes:
    """The self-signed TLS-ALPN-01 certificate for ``domain`` (RFC 8737 3), key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))


class _Answers:
    """The challenge files written for one order; ``clear`` removes them (always, in ``finally``)."""

    def __init__(self, state: str) -> None:
        self.root = paths.challenges_dir(state)
        self.written: list[str] = []

    def put(self, kind: str, name: str, data: bytes) -> None:
        path = os.path.join(self.root, kind, name)
        store.write_private(path, data)
        self.written.append(path)

    def clear(self) -> None:
        for path in self.written:
            store.remove(path)


def _answer(acme: client.ClientV2, order: messages.OrderResource, request: OrderRequest,
            answers: _Answers) -> str | None:
    """Answer each pending authorization with the first challenge of ``challenge_order``."""
    used = None
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue
        domain = authz.body.identifier.value
        offered = {c.chall.typ: c for c in authz.body.challenges if hasattr(c.chall, "typ")}
        choice = challenge_order(frozenset(offered), request.http_listener, request.last_failed)
        if not choice:
            raise OrderFailed(f"the CA offers no challenge fleet can answer for {domain} "
                              f"(offered: {', '.join(sorted(offered))}; fleet answers http-01 with "
                              f"--https-redirect-port, and tls-alpn-01)")
        used = choice[0]
        challb = offered[used]
        # The key authorization (token.thumbprint) is what both challenges prove; taken directly
        # so that an older acme release with its own TLS-ALPN-01 class answers the same way.
        key_authorization = challb.chall.key_authorization(acme.net.key)
        response = challb.chall.response(acme.net.key)
        if used == HTTP01:
            answers.put("http-01", challb.chall.encode("token"), key_authorization.encode())
        else:
            answers.put("tls-alpn-01", domain + ".pem", alpn_certificate(domain, key_authorization))
        acme.answer_challenge(challb, response)
    return used


def _stored(request: OrderRequest) -> tuple[bytes, Lifetime] | None:
    pem = store.read_private(paths.certificate_path(request.state, request.directory, request.domains))
    if pem is None:
        return None
    lifetime = store.certificate_lifetime(pem)
    if lifetime is None or not set(request.domains) <= store.certificate_names(pem):
        return None
    return pem, lifetime


def stored_certificate(request: OrderRequest) -> tuple[bytes, Lifetime] | None:
    """The certificate in the state directory for these names (None if missing or for other names)."""
    return _stored(request)


def obtain(request: OrderRequest, stop: threading.Event, now: float) -> Obtained:
    """One order, start to end; raises ``OrderFailed``. Holds the names' lock throughout, and
    first looks whether another fleet has just done it."""
    lineage = paths.lineage_dir(request.state, request.directory, request.domains)
    try:
        with store.locked(os.path.join(lineage, "lock"), stop, LOCK_WAIT):
            found = _stored(request)
            if found is not None and not is_due(found[1], now):
                return Obtained(found[0], found[1], ordered=False)
            return _order(request, stop)
    except (TimeoutError, store.StateError, OSError) as exc:
        raise OrderFailed(str(exc), refused=False) from None


def _order(request: OrderRequest, stop: threading.Event) -> Obtained:
    answers = _Answers(request.state)
    challenge = None
    try:
        acme = _client(request, stop)
        key = ec.generate_private_key(ec.SECP256R1())  # a fresh key for every certificate
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, list(request.domains)))
        challenge = _answer(acme, order, request, answers)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_DEADLINE)
        order = acme.poll_and_finalize(order, deadline=deadline)
    except messages.Error as refusal:
        raise OrderFailed(f"the CA refused: {refusal}", _problem(refusal), challenge) from None
    except errors.ValidationError as failed:
        problems = [_problem(c.error) for authz in failed.failed_authzrs for c in authz.body.challenges
                    if c.error is not None]
        detail = "; ".join(str(p.get("detail", p.get("type"))) for p in problems)
        raise OrderFailed(f"{challenge} validation failed: {detail}", problems[0] if problems else {},
                          challenge) from None
    except errors.IssuanceError as failed:
        raise OrderFailed(f"the CA did not issue: {failed.error}", _problem(failed.error), challenge) from None
    except (errors.Error, OSError, ValueError) as exc:  # requests' errors are OSErrors
        raise OrderFailed(f"could not complete the order: {exc.__class__.__name__}: {exc}",
                          challenge=challenge, refused=False) from None
    finally:
        answers.clear()
    pem = key_pem + order.fullchain_pem.encode()
    store.write_private(paths.certificate_path(request.state, request.directory, request.domains), pem)
    lifetime = store.certificate_lifetime(pem)
    assert lifetime is not None
    ari_time = None
    try:
        suggested, _ = acme.renewal_time(order.fullchain_pem.encode())
        ari_time = suggested.timestamp() if suggested is not None else None
    except errors.ARIError:
        pass  # no suggestion: two thirds of the lifetime
    return Obtained(pem, lifetime, ordered=True, challenge=challenge, ari_time=ari_time)


__all__ = ["NETWORK_TIMEOUT", "ORDER_DEADLINE", "Obtained", "OrderFailed", "OrderRequest", "alpn_certificate",
           "obtain", "stored_certificate"]
