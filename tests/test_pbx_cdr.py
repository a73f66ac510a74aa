"""The CDR writer (pbx/cdr.py) on both stores: batches, open rows and their end, cost
rounding, a clean stop, crash recovery per node, the database going away and coming back,
the bounded queue, and any interleaving of call events ending in one consistent row per call.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pbxcore.pbx.cdr import DISPOSITIONS, IN_PROGRESS, CallRecord, CdrWriter, call_cost
from pbxcore.tenancy import db as dbmod
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from tests.api_fixtures import Api
from tests.peers.postgres import PostgresCluster, _free_port

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
EXPLAIN = {"number": "74951234567", "candidates": [{"trunk": "trk_a", "why": "prefix 7495"}]}

Tenant = dict[str, Any]
MakeWriter = Callable[..., CdrWriter]


@pytest.fixture
async def tenant(api: Api) -> Tenant:
    op = await api.operator()
    return await api.tenant(op["id"], "acme")


@pytest.fixture
async def make_writer(api: Api) -> AsyncIterator[MakeWriter]:
    """A writer on the test's database (or ``db=``), stopped at the end of the test."""
    writers: list[CdrWriter] = []

    def make(node_id: str = "node-a", *, db: Database | None = None, **kw: Any) -> CdrWriter:
        kw.setdefault("flush_interval", 3600.0)  # tests flush; a partial batch never "times out"
        writer = CdrWriter(db or api.ctx.db, node_id=node_id, **kw)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        await writer.stop(timeout=5)


def start_call(writer: CdrWriter, t: Tenant, n: int, **kw: Any) -> CallRecord:
    values: dict[str, Any] = {
        "call_id": f"call-{n}@pbx",
        "operator_id": t["operator_id"],
        "tenant_id": t["id"],
        "direction": "internal",
        "from_number": "101",
        "to_number": "102",
        "extension": "101",
        "started_at": T0 + timedelta(minutes=n),
    } | kw
    return writer.call_started(**values)


def answered_call(
    writer: CdrWriter, t: Tenant, n: int, talk: float = 60, rate: Decimal | None = None
) -> CallRecord:
    call = start_call(writer, t, n)
    writer.call_answered(call, call.started_at + timedelta(seconds=5))
    writer.call_ended(
        call,
        call.started_at + timedelta(seconds=5 + talk),
        disposition="answered",
        cost_per_minute=rate,
    )
    return call


async def rows(db: Database, *calls: CallRecord) -> dict[str, m.Cdr]:
    async with db.session() as session:
        found = await session.scalars(select(m.Cdr).where(m.Cdr.id.in_([c.id for c in calls])))
        return {r.id: r for r in found}


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_the_call_path_methods_are_plain_functions() -> None:
    for name in ("call_started", "call_answered", "call_ended", "counters"):
        method = getattr(CdrWriter, name)
        assert not inspect.iscoroutinefunction(method), name


async def test_the_call_path_never_waits_on_an_unreachable_database() -> None:
    db = Database(f"postgresql://nobody@127.0.0.1:{_free_port()}/none")
    writer = CdrWriter(db, node_id="node-a", batch=5, retry_delay=0.01, max_retry_delay=0.05)
    t = {"operator_id": "op_x", "id": "ten_x"}
    try:
        writer.start()
        calls = [answered_call(writer, t, n) for n in range(20)]
        for n in range(20, 25):
            assert not inspect.isawaitable(start_call(writer, t, n))
        assert writer.counters().queued == 25  # all queued before the writer ran at all
        await wait_for(lambda: writer.counters().retries >= 3, "retries")
        counters = writer.counters()
        assert counters.queued == 25 and counters.written == 0
        assert counters.last_error is not None and "unavailable" in counters.last_error
        # the call path still answers at once while the writer retries
        writer.call_ended(calls[0], disposition="answered")  # a second end: ignored
        late = start_call(writer, t, 99)
        assert writer.counters().queued == 26 and late.disposition == IN_PROGRESS
        assert await writer.stop(timeout=0.2) == 26  # what it could not write, and says so
    finally:
        await db.close()


async def test_calls_are_written_in_batches(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch=10)
    writer.start()
    calls = [answered_call(writer, tenant, n, rate=Decimal("0.5")) for n in range(25)]
    await writer.flush()
    counters = writer.counters()
    assert (counters.batches, counters.written, counters.queued) == (3, 25, 0)
    stored = await rows(api.ctx.db, *calls)
    assert len(stored) == 25
    row = stored[calls[3].id]
    assert row.call_id == "call-3@pbx" and row.node_id == "node-a"
    assert row.started_at == T0 + timedelta(minutes=3)
    assert row.answered_at == row.started_at + timedelta(seconds=5)
    assert row.ended_at == row.started_at + timedelta(seconds=65)
    assert (row.duration_s, row.billsec, row.disposition) == (65, 60, "answered")
    assert row.cost == Decimal("0.5")
    r = await api.get(f"/tenants/{tenant['id']}/calls", params={"limit": 100})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 25


async def test_an_open_row_while_the_call_lasts_then_its_end(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer()
    writer.start()
    call = start_call(
        writer,
        tenant,
        1,
        direction="outbound",
        to_number="+74951234567",
        trunk_id="trk_a",
        explain=EXPLAIN,
    )
    await writer.flush()
    row = (await rows(api.ctx.db, call))[call.id]
    assert (row.disposition, row.node_id, row.ended_at, row.cost) == (
        IN_PROGRESS,
        "node-a",
        None,
        None,
    )
    # the API lists it as in progress, and filters on it
    r = await api.get(f"/tenants/{tenant['id']}/calls", params={"disposition": "in_progress"})
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert (item["id"], item["disposition"], item["ended_at"]) == (call.id, "in_progress", None)
    r = await api.get(f"/tenants/{tenant['id']}/calls", params={"disposition": "answered"})
    assert r.json()["total"] == 0

    writer.call_answered(call, call.started_at + timedelta(seconds=2))
    await writer.flush()
    row = (await rows(api.ctx.db, call))[call.id]
    assert row.answered_at == call.started_at + timedelta(seconds=2)
    assert row.disposition == IN_PROGRESS

    writer.call_ended(
        call,
        call.started_at + timedelta(seconds=92.3),
        disposition="answered",
        cost_per_minute=Decimal("1.2"),
    )
    await writer.flush()
    assert writer.counters().written == 3  # an insert, then two updates of the same row
    r = await api.get(f"/tenants/{tenant['id']}/calls/{call.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["disposition"] == "answered" and body["explain"] == EXPLAIN
    assert (body["duration_s"], body["billsec"]) == (93, 91)  # started seconds count
    assert body["cost"] == pytest.approx(1.82)  # 91 s at 1.2 a minute, per second
    assert body["trunk_id"] == "trk_a" and body["to"] == "+74951234567"


async def test_a_call_that_ended_before_its_start_was_written_is_one_insert(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer()
    writer.start()
    busy = start_call(writer, tenant, 1)
    writer.call_ended(busy, busy.started_at + timedelta(seconds=3), disposition="busy")
    talked = answered_call(writer, tenant, 2, talk=30)
    assert writer.counters().queued == 2  # one record per call, not one per event
    await writer.flush()
    assert (writer.counters().written, writer.counters().batches) == (2, 1)
    stored = await rows(api.ctx.db, busy, talked)
    assert (stored[busy.id].disposition, stored[busy.id].billsec) == ("busy", 0)
    assert stored[busy.id].duration_s == 3 and stored[busy.id].answered_at is None
    assert (stored[talked.id].billsec, stored[talked.id].duration_s) == (30, 35)


def test_cost_per_second_and_per_started_minute() -> None:
    rate = Decimal("0.5")
    assert call_cost(61, rate, "second") == Decimal("0.508333")
    assert call_cost(61, rate, "minute") == Decimal("1.000000")
    assert call_cost(60, rate, "minute") == Decimal("0.5")
    assert call_cost(1, rate, "minute") == Decimal("0.5")
    assert call_cost(0, rate, "minute") == call_cost(0, rate, "second") == 0
    assert call_cost(1, Decimal("0.00003"), "second") == Decimal("0.000001")  # half up
    assert call_cost(120, None, "second") is None


@pytest.mark.parametrize(
    ("rounding", "expected"), [("second", Decimal("0.508333")), ("minute", Decimal("1"))]
)
async def test_the_stored_cost_follows_the_rounding(
    api: Api, tenant: Tenant, make_writer: MakeWriter, rounding: str, expected: Decimal
) -> None:
    writer = make_writer(rounding=rounding)
    writer.start()
    paid = answered_call(writer, tenant, 1, talk=61, rate=Decimal("0.5"))
    free = answered_call(writer, tenant, 2, talk=61)
    missed = start_call(writer, tenant, 3)
    writer.call_ended(missed, disposition="no_answer", cost_per_minute=Decimal("0.5"))
    await writer.flush()
    stored = await rows(api.ctx.db, paid, free, missed)
    assert stored[paid.id].billsec == 61
    assert stored[paid.id].cost == expected
    assert stored[free.id].cost is None
    assert stored[missed.id].cost == 0


async def test_stop_writes_everything_queued(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch=1000)  # neither a full batch nor the interval would write
    writer.start()
    ended = [answered_call(writer, tenant, n) for n in range(250)]
    lasting = [start_call(writer, tenant, n) for n in range(250, 300)]
    assert await writer.stop() == 0
    assert writer.counters().queued == 0
    stored = await rows(api.ctx.db, *ended, *lasting)
    assert len(stored) == 300
    assert {stored[c.id].disposition for c in ended} == {"answered"}
    assert {stored[c.id].disposition for c in lasting} == {IN_PROGRESS}


async def test_recover_closes_the_open_rows_of_this_node_only(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    # node a "crashes" with three calls up (its writer stops without their end), node b
    # has one call up
    crashed = make_writer("node-a")
    crashed.start()
    ringing = start_call(crashed, tenant, 1)
    talking = start_call(crashed, tenant, 2)
    crashed.call_answered(talking, talking.started_at + timedelta(seconds=4))
    done = answered_call(crashed, tenant, 3)
    assert await crashed.stop() == 0
    other = make_writer("node-b")
    other.start()
    elsewhere = start_call(other, tenant, 4)
    await other.flush()

    restarted = make_writer("node-a")
    live = start_call(restarted, tenant, 5)  # a call of the new run, before its recovery
    restarted.start()
    await restarted.flush()
    assert restarted.counters().recovered == 2
    stored = await rows(api.ctx.db, ringing, talking, done, elsewhere, live)
    for call in (ringing, talking):
        row = stored[call.id]
        assert row.disposition == "failed" and row.ended_at is not None
        assert row.ended_at >= (row.answered_at or row.started_at)
        assert row.duration_s == pytest.approx((row.ended_at - row.started_at).total_seconds(), 1)
        assert row.cost is None
    assert stored[ringing.id].billsec == 0
    assert stored[talking.id].answered_at == talking.started_at + timedelta(seconds=4)
    assert stored[done.id].disposition == "answered"  # an ended call stays as it was
    assert stored[elsewhere.id].disposition == IN_PROGRESS  # another node's call
    assert stored[live.id].disposition == IN_PROGRESS  # this run's own call
    assert await restarted.recover() == 0  # and a second pass finds nothing to close
    r = await api.get(f"/tenants/{tenant['id']}/calls", params={"disposition": "failed"})
    assert {i["id"] for i in r.json()["items"]} == {ringing.id, talking.id}


async def test_a_record_the_database_refuses_does_not_hold_the_others(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer()
    writer.start()
    before = answered_call(writer, tenant, 1)
    orphan = answered_call(writer, {"operator_id": "op_gone", "id": "ten_gone"}, 2)
    after = answered_call(writer, tenant, 3)
    await writer.flush()
    counters = writer.counters()
    assert (counters.rejected, counters.written, counters.queued) == (1, 2, 0)
    assert set(await rows(api.ctx.db, before, orphan, after)) == {before.id, after.id}


async def test_a_full_queue_drops_starts_first_and_ended_calls_last(
    api: Api, tenant: Tenant, make_writer: MakeWriter
) -> None:
    writer = make_writer(max_queue=10)  # not started: the queue only fills
    calls = [start_call(writer, tenant, n) for n in range(10)]
    for call in calls[:5]:
        writer.call_ended(call, disposition="cancelled")
    calls += [start_call(writer, tenant, n) for n in range(10, 13)]
    assert writer.counters().dropped_starts == 3  # the starts of calls 5, 6, 7
    writer.call_ended(calls[5], disposition="no_answer")  # its start went, its end counts
    assert writer.counters().dropped_starts == 4  # call 8's start made room
    for call in calls[9:13]:
        writer.call_ended(call, disposition="cancelled")  # merged into their queued start
    assert writer.counters().queued == 10
    calls.append(start_call(writer, tenant, 13))  # nothing but ended calls: its own start goes
    assert writer.counters().dropped_starts == 5
    writer.call_ended(calls[13], disposition="failed")  # now the oldest ended call goes
    counters = writer.counters()
    assert (counters.dropped_starts, counters.dropped_ended, counters.queued) == (5, 1, 10)
    writer.start()
    await writer.flush()
    stored = await rows(api.ctx.db, *calls)
    lost = {calls[0].id}  # the one ended record dropped
    never_ended = {calls[n].id for n in (6, 7, 8)}  # their starts dropped, no end yet
    assert set(stored) == {c.id for c in calls} - lost - never_ended
    assert stored[calls[5].id].disposition == "no_answer"  # a whole row from its end
    assert stored[calls[13].id].disposition == "failed"


async def test_records_wait_for_a_database_that_is_away(
    api: Api,
    tenant: Tenant,
    make_writer: MakeWriter,
    db_url: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if api.ctx.db.dialect == "sqlite":
        monkeypatch.setattr(dbmod, "SQLITE_BUSY_MS", 20)  # fail fast while it is locked
    own = Database(db_url)
    try:
        writer = make_writer(db=own, batch=8, retry_delay=0.01, max_retry_delay=0.1)
        writer.start()
        await writer.flush()  # recovery done: the writer is idle with the store up
        away = await _take_away(api, own, db_url, request)
        try:
            ended = [answered_call(writer, tenant, n) for n in range(20)]
            lasting = [start_call(writer, tenant, n) for n in range(20, 25)]
            await wait_for(lambda: writer.counters().retries >= 3, "retries while it is away")
            assert writer.counters().queued == 25 and writer.counters().written == 0
        finally:
            away()
        await asyncio.wait_for(writer.flush(), timeout=120)
        assert writer.counters().written == 25 and writer.counters().queued == 0
        stored = await rows(own, *ended, *lasting)
        assert len(stored) == 25
        assert {stored[c.id].disposition for c in lasting} == {IN_PROGRESS}
    finally:
        await own.close()


async def _take_away(
    api: Api, own: Database, db_url: str, request: pytest.FixtureRequest
) -> Callable[[], None]:
    """Makes the test's store unavailable; returns the function that brings it back."""
    if api.ctx.db.dialect == "sqlite":
        locker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")

        def unlock() -> None:
            locker.execute("ROLLBACK")
            locker.close()

        return unlock
    # PostgreSQL: keep a copy, drop the database, and later rename the copy back
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = db_url.rsplit("/", 1)[1]
    await api.ctx.db.engine.dispose()
    await own.engine.dispose()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_copy" TEMPLATE "{name}"')
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def restore() -> None:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}_copy" RENAME TO "{name}"')

    return restore


def test_bad_calls_are_the_callers_bug() -> None:
    writer = CdrWriter(Database("sqlite:////tmp/pbx-cdr-unused/pbx.db"), node_id="n")
    t = {"operator_id": "op_x", "id": "ten_x"}
    with pytest.raises(ValueError, match="direction"):
        start_call(writer, t, 1, direction="sideways")
    with pytest.raises(ValueError, match="aware"):
        start_call(writer, t, 1, started_at=datetime(2025, 1, 1))
    call = start_call(writer, t, 1)
    with pytest.raises(ValueError, match="never answered"):
        writer.call_ended(call, disposition="answered")
    with pytest.raises(ValueError, match="disposition"):
        writer.call_ended(call, disposition="in_progress")  # type: ignore[arg-type]
    writer.call_answered(call, call.started_at - timedelta(seconds=5))  # a clock step back
    assert call.answered_at == call.started_at
    with pytest.raises(ValueError, match="for a call answered"):
        writer.call_ended(call, disposition="busy")
    long = start_call(writer, t, 2, from_number="1" * 500, call_id="x" * 500)
    assert (len(long.from_number), len(long.call_id)) == (64, 200)
    with pytest.raises(ValueError, match="node_id"):
        CdrWriter(writer.db, node_id="")


# -- any interleaving of events for many calls: one consistent row per call ----------------

# per call: answered?, its disposition if not, talk and ring seconds, ends at all?
_call = st.tuples(
    st.booleans(),
    st.sampled_from([d for d in DISPOSITIONS if d != "answered"]),
    st.integers(0, 4000),
    st.integers(0, 60),
    st.booleans() | st.just(True),
)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[Any], list[tuple[str, int]], int]:
    calls = draw(st.lists(_call, min_size=1, max_size=25))
    events: list[tuple[str, int]] = []
    for i, (answered, _d, _talk, _ring, ends) in enumerate(calls):
        events.append(("start", i))
        if answered:
            events.append(("answer", i))
        if ends:
            events.append(("end", i))
    # a random interleaving that keeps each call's own events in order
    order = draw(st.permutations(range(len(events))))
    by_call: dict[int, list[str]] = {}
    for kind, i in events:
        by_call.setdefault(i, []).append(kind)
    picks = [events[k][1] for k in order]
    steps: list[tuple[str, int]] = []
    for i in picks:
        steps.append((by_call[i].pop(0), i))
        pause = draw(st.sampled_from([0, 0, 0, 1, 3, -1]))  # yield to the writer, or flush
        if pause:
            steps.append(("pause", pause))
    return calls, steps, draw(st.integers(1, 6))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenarios(), rounding=st.sampled_from(["second", "minute"]))
async def test_any_interleaving_ends_in_one_consistent_row_per_call(
    api: Api, tenant: Tenant, scenario: Any, rounding: str
) -> None:
    specs, steps, batch = scenario
    writer = CdrWriter(api.ctx.db, node_id="node-h", batch=batch, rounding=rounding)  # type: ignore[arg-type]
    writer.start()
    records: dict[int, CallRecord] = {}
    rate = Decimal("0.35")
    try:
        for kind, i in steps:
            if kind == "pause":
                if i < 0:
                    await writer.flush()
                for _ in range(max(i, 0)):
                    await asyncio.sleep(0)  # lets a batch start and be mid-write
                continue
            answered, disposition, talk, ring, _ends = specs[i]
            if kind == "start":
                records[i] = start_call(writer, tenant, i)
                continue
            call = records[i]
            if kind == "answer":
                writer.call_answered(call, call.started_at + timedelta(seconds=ring))
            else:
                end = call.started_at + timedelta(seconds=ring + talk + 0.5)
                writer.call_ended(
                    call,
                    end,
                    disposition="answered" if answered else disposition,
                    cost_per_minute=rate,
                )
    finally:
        assert await writer.stop() == 0
    stored = await rows(api.ctx.db, *records.values())
    assert set(stored) == {c.id for c in records.values()}  # exactly one row per call
    counters = writer.counters()
    assert counters.queued == counters.dropped == counters.rejected == 0
    event("some row written in steps" if counters.written > len(records) else "one write each")
    for i, call in records.items():
        answered, disposition, talk, ring, ends = specs[i]
        row = stored[call.id]
        assert row.node_id == "node-h" and row.call_id == f"call-{i}@pbx"
        assert row.started_at == call.started_at
        if not ends:
            assert (row.disposition, row.ended_at, row.cost, row.billsec) == (
                IN_PROGRESS,
                None,
                None,
                0,
            )
            assert (row.answered_at is not None) == answered
            continue
        assert row.disposition == ("answered" if answered else disposition)
        assert row.ended_at == call.started_at + timedelta(seconds=ring + talk + 0.5)
        assert row.duration_s == ring + talk + 1
        if answered:
            assert row.answered_at == call.started_at + timedelta(seconds=ring)
            assert row.billsec == talk + 1
        else:
            assert row.answered_at is None and row.billsec == 0
        assert row.cost == call_cost(row.billsec, rate, rounding)  # type: ignore[arg-type]
