"""Location service: bindings per AOR, q ordering, expiry, atomic modify."""

from __future__ import annotations

import pytest

from pbxcore.sip.location import Binding, LocationService, MemoryLocationService


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _binding(contact: str, expires_at: float, q: float | None = None) -> Binding:
    return Binding(
        aor="sip:alice@a.test",
        contact=contact,
        expires_at=expires_at,
        q=q,
        call_id="c1",
        cseq=1,
    )


async def test_modify_lookup_q_order_and_expiry() -> None:
    clock = Clock()
    location = MemoryLocationService(clock=clock)
    assert isinstance(location, LocationService)
    result = await location.modify(
        "sip:alice@a.test",
        lambda current: [
            *current,
            _binding("sip:a@1", 1060, 0.1),
            _binding("sip:a@2", 1030),
            _binding("sip:a@3", 1090, 0.5),
        ],
    )
    assert [b.contact for b in result] == ["sip:a@2", "sip:a@3", "sip:a@1"]
    clock.now = 1045
    assert [b.contact for b in await location.lookup("sip:alice@a.test")] == ["sip:a@3", "sip:a@1"]
    seen: list[list[str]] = []

    def change(current: list[Binding]) -> list[Binding]:
        seen.append([b.contact for b in current])
        return [b for b in current if b.contact != "sip:a@1"]

    assert [b.contact for b in await location.modify("sip:alice@a.test", change)] == ["sip:a@3"]
    assert seen == [["sip:a@1", "sip:a@3"]]
    clock.now = 2000
    assert await location.lookup("sip:alice@a.test") == []
    assert len(location) == 0


async def test_modify_abort_keeps_bindings() -> None:
    location = MemoryLocationService(clock=Clock())
    await location.modify("sip:alice@a.test", lambda _: [_binding("sip:a@1", 5000)])

    def fail(current: list[Binding]) -> list[Binding]:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await location.modify("sip:alice@a.test", fail)
    assert len(await location.lookup("sip:alice@a.test")) == 1


async def test_purge_and_expires_in() -> None:
    clock = Clock()
    location = MemoryLocationService(clock=clock)
    await location.modify("sip:a@a.test", lambda _: [_binding("sip:a@1", 1010.2)])
    await location.modify("sip:b@a.test", lambda _: [_binding("sip:b@1", 1100)])
    binding = (await location.lookup("sip:a@a.test"))[0]
    assert binding.expires_in(clock.now) == 11
    assert binding.expires_in(2000) == 0
    clock.now = 1050
    assert location.purge() == 1
    assert location.aors() == ["sip:b@a.test"]


def test_modify_now_and_store_without_a_coroutine() -> None:
    clock = Clock()
    location = MemoryLocationService(clock=clock)
    aor = "sip:alice@a.test"
    one = location.modify_now(aor, lambda current: [*current, _binding("sip:a@1", 1060, 0.2)])
    assert [b.contact for b in one] == ["sip:a@1"]
    both = location.store(
        aor, [*one, _binding("sip:a@2", 1030, 0.9), _binding("sip:a@3", 999)], clock.now
    )
    assert [b.contact for b in both] == ["sip:a@2", "sip:a@1"]  # by q, the expired one gone
    clock.now = 1070
    assert location.store(aor, location._current(aor, clock.now), clock.now) == []
    assert len(location) == 0
