"""Location service: the contacts bound to each address-of-record (RFC 3261 §10).

:class:`LocationService` is the interface; :class:`MemoryLocationService` keeps
bindings in this process. A database-backed implementation (several nodes
sharing one PostgreSQL) implements the same two coroutines, running ``modify``'s
callback inside a transaction that locks the AOR's rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Binding",
    "BindingChange",
    "BindingListener",
    "ImmediateLocationService",
    "LocationService",
    "MemoryLocationService",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an address-of-record."""

    aor: str  # canonical "sip:user@domain"
    contact: str  # the Contact URI as the UA sent it
    expires_at: float  # wall-clock time (time.time())
    q: float | None
    call_id: str
    cseq: int
    source: str = ""  # "transport:host:port" the REGISTER came from
    user_agent: str | None = None

    def expires_in(self, now: float) -> int:
        """Whole seconds left, rounded up (what the 200 OK reports)."""
        return max(0, int(self.expires_at - now + 0.999))


BindingChange = Callable[[list[Binding]], list[Binding]]
# (aor, bindings before, bindings after) of a write that added or removed a contact
BindingListener = Callable[[str, list[Binding], list[Binding]], None]


@runtime_checkable
class LocationService(Protocol):
    """Storage of bindings per address-of-record."""

    async def lookup(self, aor: str) -> list[Binding]:
        """Unexpired bindings of ``aor``, highest q first."""
        ...

    async def modify(self, aor: str, change: BindingChange) -> list[Binding]:
        """Atomically replace the bindings of ``aor`` by ``change(current)``.

        ``current`` holds only unexpired bindings; an exception raised by
        ``change`` aborts the update and propagates. Returns the new bindings,
        highest q first.
        """
        ...


@runtime_checkable
class ImmediateLocationService(LocationService, Protocol):
    """A location service that can also read and write without suspending (bindings held
    in this process): what the REGISTER fast path needs to answer within one callback."""

    def bindings_now(self, aor: str) -> tuple[list[Binding], float]:
        """The unexpired bindings of ``aor`` in stored order, and the service's clock."""
        ...

    def store(self, aor: str, bindings: list[Binding], now: float) -> list[Binding]:
        """Set the bindings of ``aor`` (those alive at ``now``); returns them by q."""
        ...

    def modify_now(self, aor: str, change: BindingChange) -> list[Binding]:
        """:meth:`LocationService.modify` without a coroutine."""
        ...


def _by_q(bindings: list[Binding]) -> list[Binding]:
    # q absent counts as 1.0 for ordering; ties keep registration order
    return sorted(bindings, key=lambda b: -(1.0 if b.q is None else b.q))


class MemoryLocationService:
    """Bindings held in a dict; expired ones vanish on access and on :meth:`purge`."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._bindings: dict[str, list[Binding]] = {}
        # called as listener(aor, before, after) when a write adds or removes a contact
        # (not on a refresh of the same contacts); it must not raise, nor block
        self.listener: BindingListener | None = None

    def _current(self, aor: str, now: float) -> list[Binding]:
        bindings = self._bindings.get(aor)
        if not bindings:
            return []
        alive = [b for b in bindings if b.expires_at > now]
        if len(alive) != len(bindings):
            if alive:
                self._bindings[aor] = alive
            else:
                del self._bindings[aor]
        return alive

    async def lookup(self, aor: str) -> list[Binding]:
        return _by_q(self._current(aor, self._clock()))

    def bindings_now(self, aor: str) -> tuple[list[Binding], float]:
        now = self._clock()
        return self._current(aor, now), now

    async def modify(self, aor: str, change: BindingChange) -> list[Binding]:
        return self.modify_now(aor, change)

    def modify_now(self, aor: str, change: BindingChange) -> list[Binding]:
        """:meth:`modify` without a coroutine (the change is synchronous, so nothing can
        interleave: no lock needed)."""
        now = self._clock()
        return self.store(aor, change(list(self._current(aor, now))), now)

    def store(self, aor: str, bindings: list[Binding], now: float) -> list[Binding]:
        """Set the bindings of ``aor`` (those alive at ``now``); returns them by q."""
        updated = [b for b in bindings if b.expires_at > now]
        listener = self.listener
        if listener is not None:
            before = self._bindings.get(aor, [])
            if {b.contact for b in before} != {b.contact for b in updated}:
                listener(aor, list(before), list(updated))
        if updated:
            self._bindings[aor] = updated
        else:
            self._bindings.pop(aor, None)
        return _by_q(updated) if len(updated) > 1 else updated

    def purge(self) -> int:
        """Drop expired bindings everywhere; returns how many were dropped."""
        now = self._clock()
        dropped = 0
        for aor in list(self._bindings):
            before = len(self._bindings[aor])
            dropped += before - len(self._current(aor, now))
        return dropped

    def __len__(self) -> int:
        """Number of AORs with at least one binding (expired ones may linger until accessed)."""
        return len(self._bindings)

    @property
    def binding_count(self) -> int:
        """Bindings held (an expired one counts until it is next accessed or purged)."""
        return sum(len(b) for b in self._bindings.values())

    def aors(self) -> list[str]:
        return sorted(self._bindings)
