"""Which hosts the front tier balances, ready or draining, from DNS and health (pure).

An address comes from DNS (or the command line); its health probe (``/_fleet/health/ready``)
says whether it is ready and which host it is (``fleet up --host-id``). The proxy balances one
upstream per host id (a host answering on IPv4 and IPv6 is one host), at the first healthy
address of it. ``HostTable.view()`` is what the proxy should hold:

- a host with an address that DNS names: takes new sessions while healthy;
- a host no longer named (it left DNS): draining, so the sessions already there keep going
  while it answers, and new ones go elsewhere; forgotten once it stops answering;
- a host named but not answering: kept, not ready, so it is used again when it comes back.

A fleet without ``--host-id`` is a host named by its address.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.balance.dnsplan import Address


@dataclass(frozen=True)
class HostView:
    """One upstream of the front tier, as the proxy should hold it."""

    address: Address
    ready: bool
    draining: bool


@dataclass
class AddressState:
    named: bool = True  # in the last good DNS answer (or on the command line)
    healthy: bool = False
    host_id: str | None = None  # from its last answered probe
    probed: bool = False


def address_text(address: Address) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class HostTable:
    """Addresses, their health and host ids; ``view()`` turns them into the proxy's upstreams."""

    def __init__(self) -> None:
        self.addresses: dict[Address, AddressState] = {}

    def name(self, wanted: frozenset[Address]) -> None:
        """The addresses DNS (and the command line) name now; the others start draining."""
        for address, state in self.addresses.items():
            state.named = address in wanted
        for address in wanted:
            self.addresses.setdefault(address, AddressState())
        self._forget()

    def probed(self, address: Address, healthy: bool, host_id: str | None) -> None:
        state = self.addresses.get(address)
        if state is None:
            return
        state.healthy = healthy
        state.probed = True
        if host_id is not None:  # a host that does not answer keeps the id it had
            state.host_id = host_id
        self._forget()

    def _forget(self) -> None:
        """An address that left DNS and does not answer (or never did) is gone for good."""
        for address in [a for a, s in self.addresses.items() if not s.named and (s.probed and not s.healthy)]:
            del self.addresses[address]
        for address in [a for a, s in self.addresses.items() if not s.named and not s.probed]:
            del self.addresses[address]

    def host_of(self, address: Address) -> str:
        state = self.addresses[address]
        return state.host_id or address_text(address)

    def view(self) -> dict[str, HostView]:
        """host id -> how the proxy should hold it. Hosts never seen healthy are left out: their
        id is not known yet."""
        groups: dict[str, list[tuple[Address, AddressState]]] = {}
        for address, state in sorted(self.addresses.items()):
            if state.host_id is None and not state.healthy:
                continue
            groups.setdefault(self.host_of(address), []).append((address, state))
        view = {}
        for host, members in groups.items():
            healthy = [address for address, state in members if state.healthy]
            named_healthy = [address for address, state in members if state.healthy and state.named]
            address = (named_healthy or healthy or [members[0][0]])[0]
            view[host] = HostView(address, ready=bool(healthy),
                                  draining=not any(state.named for _, state in members))
        return view


def changes(before: dict[str, HostView], after: dict[str, HostView]) -> list[tuple[str, str, HostView | None]]:
    """What to do to the proxy to go from ``before`` to ``after``: (verb, host, view), verbs
    ``add`` (new host, or its address moved), ``ready``, ``drain`` (either way: the view says),
    ``remove``. Pure, so the order of calls is tested without a proxy."""
    steps: list[tuple[str, str, HostView | None]] = []
    for host in before.keys() - after.keys():
        steps.append(("remove", host, None))
    for host, view in sorted(after.items()):
        old = before.get(host)
        if old is None or old.address != view.address:
            steps.append(("add", host, view))
            if view.draining:
                steps.append(("drain", host, view))
            continue
        if old.ready != view.ready:
            # The proxy forgets a draining mark when a host goes down: set both again.
            steps += [("ready", host, view), ("drain", host, view)]
        elif old.draining != view.draining:
            steps.append(("drain", host, view))
    return steps


__all__ = ["AddressState", "HostTable", "HostView", "address_text", "changes"]
