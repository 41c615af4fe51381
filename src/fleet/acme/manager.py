"""``fleet up --domain``: the master's certificate manager, a background task.

At start (``prepare``, before the proxy binds) the state directory is made or checked; a
directory others may read is refused and fleet does not start. Then ``run``: a stored
certificate for the names is used as is (no order); otherwise, and at renewal time, an order
runs in a thread of its own (``client.obtain``: blocking HTTP, bounded by timeouts) while the
event loop serves on. A new certificate goes to the proxy through ``on_certificate`` (the
front's TLS reload: every proxy process, or the managed nginx/HAProxy). A failure is logged
with the CA's problem document, counted, shown in ``fleet status`` and retried after
``policy.retry_delay``; the certificate that serves (if any) serves on.

Time is ``clock()`` (Unix seconds) and waiting is ``sleep``: a test hands in its own.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet.acme import paths, policy
from fleet.acme.policy import CERT_TABLE, CertState, Lifetime
from fleet.config.sections.acme import AcmeSettings

RESULTS = ("valid", "reused", "refused", "error")
# The longest sleep between two looks at the clock (a suspended laptop wakes up late).
MAX_SLEEP = 600.0


def retry_base(environ: Mapping[str, str]) -> float:
    """``FLEET_ACME_RETRY_BASE`` seconds (tests), else ``policy.RETRY_BASE``."""
    text = environ.get("FLEET_ACME_RETRY_BASE", "").strip()
    if not text:
        return policy.RETRY_BASE
    value = float(text)
    if not 0.1 <= value <= 86400:  # also refuses nan
        raise ValueError(f"FLEET_ACME_RETRY_BASE must be 0.1 to 86400 seconds, not {text!r}")
    return value


class CertificateManager:
    def __init__(self, acme: AcmeSettings, http_listener: bool, on_certificate: Callable[[], Awaitable[str | None]],
                 log: Callable[[str], None], environ: Mapping[str, str], *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.acme = acme
        self.root = paths.state_dir(acme, environ)
        self.http_listener = http_listener
        self.on_certificate = on_certificate
        self.log = log
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry_base = retry_base(environ)
        self.state = CertState.NONE
        self.lifetime: Lifetime | None = None
        self.next_attempt: float | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.last_problem: dict[str, object] | None = None
        self.last_failed_challenge: str | None = None
        self.orders: Counter[str] = Counter({result: 0 for result in RESULTS})
        self._stop = threading.Event()

    # -- start ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make or check the state directory; raises ``store.StateError`` (fleet does not start)."""
        try:
            from fleet.acme import client  # noqa: F401  (the acme library, at start rather than at the first order)
        except ImportError as exc:
            raise RuntimeError(f"--domain needs the ACME client library: pip install 'fleet[acme]' ({exc})") from None
        from fleet.acme import store

        store.ensure_dir(self.root)
        store.check_tree(self.root)
        found = self._stored()
        if found is not None:
            self._move(CertState.VALID)
            self.lifetime = found
            self.orders["reused"] += 1
            self.next_attempt = policy.renewal_time(found, self.rng)
            self.log(f"ACME: using the stored certificate for {', '.join(self.acme.domain)} "
                     f"(expires {_when(found.not_after)}; renewal from {_when(self.next_attempt)})")

    def _request(self) -> Any:
        from fleet.acme.client import OrderRequest

        acme = self.acme
        return OrderRequest(acme.acme_directory, acme.domain, acme.acme_email, acme.acme_ca_root, self.root,
                            self.http_listener, self.last_failed_challenge)

    def _stored(self) -> Lifetime | None:
        from fleet.acme.client import stored_certificate

        found = stored_certificate(self._request())
        if found is None or found[1].not_after <= self.clock():
            return None
        return found[1]

    def _move(self, target: CertState) -> None:
        self.state = CERT_TABLE.move(self.state, target)

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Order when due, forever (cancelled when fleet stops)."""
        try:
            while True:
                now = self.clock()
                due = self.next_attempt if self.next_attempt is not None else now
                if now < due:
                    await asyncio.sleep(min(due - now, MAX_SLEEP))
                    continue
                await self._attempt()
        finally:
            self._stop.set()  # an order under way gives up at its next step

    async def _attempt(self) -> None:
        from fleet.acme.client import OrderFailed, obtain

        renewing = self.state in (CertState.VALID, CertState.RENEW_FAILED)
        self._move(CertState.RENEWING if renewing else CertState.ORDERING)
        names = ", ".join(self.acme.domain)
        self.log(f"ACME: {'renewing' if renewing else 'ordering'} the certificate for {names} "
                 f"from {self.acme.acme_directory}")
        try:
            got = await _in_thread(obtain, self._request(), self._stop, self.clock())
        except OrderFailed as failed:
            self._failed(failed, renewing)
            return
        except Exception as exc:  # noqa: BLE001 - a library surprise: logged, counted, retried like an error
            self._failed(OrderFailed(f"unexpected error in the ACME client: {exc!r}", refused=False), renewing)
            return
        self.failures = 0
        self.last_error = self.last_problem = None
        self.lifetime = got.lifetime
        self.orders["valid" if got.ordered else "reused"] += 1
        self._move(CertState.VALID)
        self.next_attempt = policy.renewal_time(
            got.lifetime, self.rng, None if got.ari_time is None else (got.ari_time, got.ari_time))
        how = (f"obtained ({got.challenge})" if got.ordered
               else "taken from the state directory (another fleet sharing it had just obtained it)")
        self.log(f"ACME: certificate for {names} {how}; expires {_when(got.lifetime.not_after)}, "
                 f"renewal from {_when(self.next_attempt)}")
        message = await self.on_certificate()
        if message:
            self.log(message)

    def _failed(self, failed: Any, renewing: bool) -> None:
        self.failures += 1
        self.orders["refused" if failed.refused else "error"] += 1
        self.last_error = str(failed)
        self.last_problem = failed.problem or None
        if failed.challenge is not None:
            self.last_failed_challenge = failed.challenge
        self._move(CertState.RENEW_FAILED if renewing else CertState.FAILED)
        now = self.clock()
        delay = policy.retry_delay(self.failures, self.rng, base=self.retry_base,
                                   lifetime=self.lifetime if renewing else None, now=now)
        self.next_attempt = now + delay
        serving = ("the current certificate serves on" if renewing
                   else "TLS handshakes stay refused; plain HTTP serves on")
        problem = f" (CA problem document: {failed.problem})" if failed.problem else ""
        self.log(f"ACME: order for {', '.join(self.acme.domain)} failed ({self.failures} in a row): "
                 f"{failed}{problem}; {serving}; next try in {delay:.0f} s")

    # -- outward -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """For ``fleet status`` (JSON)."""
        return {
            "domains": list(self.acme.domain), "directory": self.acme.acme_directory, "state": self.state.value,
            "not_after": self.lifetime.not_after if self.lifetime else None,
            "next_attempt": self.next_attempt, "failures": self.failures,
            "last_error": self.last_error, "problem": self.last_problem, "orders": dict(self.orders),
            "state_dir": self.root,
        }

    def collector(self) -> Collector:
        return _AcmeCollector(self)


class _AcmeCollector(Collector):
    def __init__(self, manager: CertificateManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        manager = self.manager
        expiry = GaugeMetricFamily("fleet_certificate_expiry_timestamp_seconds",
                                   "When the certificate fleet serves expires (Unix time); absent until "
                                   "the first one.", labels=["domain"])
        if manager.lifetime is not None:
            expiry.add_metric([manager.acme.domain[0]], manager.lifetime.not_after)
        yield expiry
        orders = CounterMetricFamily("fleet_acme_orders", "ACME certificate orders by result: valid (issued), "
                                     "reused (a stored certificate, no order), refused (the CA said no), "
                                     "error (the CA could not be reached, a timeout).", labels=["result"])
        for result, count in sorted(manager.orders.items()):
            orders.add_metric([result], count)
        yield orders


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call in a daemon thread: a stop never waits for a CA that does not answer
    (each of its HTTP calls has a timeout anyway), and nothing blocks the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def hand_back(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            pass  # the loop is closed: fleet stopped while the order ran; nobody waits for it

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the loop, re-raised there
            error = exc
            hand_back(lambda: future.set_exception(error))
        else:
            hand_back(lambda: future.set_result(result))

    threading.Thread(target=work, name="fleet-acme-order", daemon=True).start()
    return await future


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def status_line(status: Mapping[str, Any], now: float) -> str:
    """``fleet status``'s line about the certificate."""
    line = f"certificate ({', '.join(status.get('domains') or [])}): {status.get('state')}"
    if status.get("not_after"):
        line += f", expires {_when(status['not_after'])}"
    if status.get("next_attempt"):
        line += f", next order in {max(0, status['next_attempt'] - now):.0f} s"
    if status.get("last_error"):
        line += f"; last error: {status['last_error']}"
    return line


__all__ = ["CertificateManager", "RESULTS", "retry_base", "status_line"]
