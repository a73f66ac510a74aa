"""The platform event writer on a real store: batches, the bounded queue, retention, and
the hooks of the registrar's location service, the trunks and the B2BUA as events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pbxcore.pbx.b2bua import CallFailure
from pbxcore.pbx.events import Event, EventWriter, PlatformEvents
from pbxcore.pbx.trunks import TrunkStatus
from pbxcore.sip.location import Binding, MemoryLocationService
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from tests.test_pbx_decision import operator, snapshot, tenant


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/events.db")
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


async def _rows(db: Database) -> list[m.PlatformEvent]:
    async with db.session() as session:
        query = select(m.PlatformEvent).order_by(m.PlatformEvent.at, m.PlatformEvent.id)
        return list((await session.scalars(query)).all())


def _event(n: int, at: datetime | None = None) -> Event:
    return Event(
        type="call_failed",
        operator_id="op1",
        subject=f"+7495000{n:04d}",
        status=503,
        at=at or datetime.now(UTC),
    )


async def test_events_are_written_in_batches_with_their_fields(db: Database) -> None:
    writer = EventWriter(db, node_id="node-a", batch=10, flush_interval=0)
    writer.start()
    try:
        for n in range(25):
            writer.add(_event(n))
        await writer.flush()
    finally:
        assert await writer.stop() == 0
    rows = await _rows(db)
    assert len(rows) == 25
    assert {r.node_id for r in rows} == {"node-a"} and {r.status for r in rows} == {503}
    c = writer.counters()
    assert c.written == 25 and c.batches >= 3 and c.dropped == 0 and c.queued == 0


async def test_a_full_queue_drops_the_oldest_and_counts_it(db: Database) -> None:
    writer = EventWriter(db, max_queue=5)  # not started: nothing is written meanwhile
    for n in range(8):
        writer.add(_event(n))
    c = writer.counters()
    assert c.queued == 5 and c.dropped == 3
    writer.start()
    await writer.stop()
    assert [r.subject for r in await _rows(db)] == [f"+7495000{n:04d}" for n in range(3, 8)]


async def test_retention_keeps_the_newest_rows_and_days(db: Database) -> None:
    writer = EventWriter(db, keep_days=1, keep_rows=4, flush_interval=0)
    now = datetime.now(UTC)
    assert await writer.prune() == 0  # (the next one is prune_interval away)
    writer.start()
    try:
        writer.add(_event(0, now - timedelta(days=2)))  # past keep_days
        for n in range(1, 7):
            writer.add(_event(n, now - timedelta(minutes=10 - n)))
        await writer.flush()
        assert len(await _rows(db)) == 7
        assert await writer.prune() == 3  # the old one, and two beyond keep_rows
    finally:
        await writer.stop()
    assert [r.subject for r in await _rows(db)] == [f"+7495000{n:04d}" for n in range(3, 7)]
    assert writer.counters().pruned == 3


async def test_the_hooks_become_events_of_the_right_operator(db: Database) -> None:
    domain = "a.voip.example"
    world = snapshot(
        [operator("op1", [], {})], [replace(tenant("A", "op1", []), domain=domain)], []
    )
    writer = EventWriter(db, flush_interval=0)
    events = PlatformEvents(lambda: world, writer)
    location = MemoryLocationService()
    location.listener = events.bindings_changed
    aor = f"sip:201@{domain}"
    later = datetime.now(UTC).timestamp() + 300

    def binding(contact: str) -> Binding:
        return Binding(aor, contact, later, None, "reg-call-1", 1, "udp:127.0.0.1:5070", "ua/1")

    location.modify_now(aor, lambda _: [binding("sip:201@127.0.0.1:5070")])
    location.modify_now(aor, lambda _: [binding("sip:201@127.0.0.1:5070")])  # a refresh
    location.modify_now(aor, lambda _: [])
    location.modify_now("sip:9@not.a.tenant", lambda _: [binding("sip:9@127.0.0.1")])
    events.trunk_state("op1", TrunkStatus("trk1", "failed", last_status=403), "registering")
    events.trunk_state("op1", TrunkStatus("trk1", "registering"), None)  # a start: no event
    events.call_failed(CallFailure("c-1", "op1", "A", 404, "not_found", "201", "299"))
    writer.start()
    await writer.stop()
    rows = await _rows(db)
    assert [(r.type, r.tenant_id, r.subject) for r in rows] == [
        ("registration", "A", aor),
        ("unregistration", "A", aor),
        ("trunk_state", None, "trk1"),
        ("call_failed", "A", "299"),
    ]
    assert {r.operator_id for r in rows} == {"op1"}
    assert rows[0].detail is not None and rows[0].detail["user_agent"] == "ua/1"
    assert rows[2].detail == {"state": "failed", "previous": "registering", "last_error": None}
    assert rows[3].status == 404 and rows[3].call_id == "c-1"
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(m.PlatformEvent)) == 4
