"""The CDR writer: call detail records through an in-memory queue, written in batches.

The call path reports a call's life with three plain (never ``async``) methods that only
touch memory, so a call never waits on the database, even when it is down::

    writer = CdrWriter(db, node_id="pbx-1", rounding="second")
    writer.start()                       # recovers this node's open rows, then writes
    call = writer.call_started(call_id=..., operator_id=..., tenant_id=..., direction="outbound",
                               from_number="101", to_number="+74951234567", extension="101",
                               trunk_id="trk_...", explain=decision.explain)
    writer.call_answered(call)
    writer.call_ended(call, disposition="answered", cost_per_minute=route.cost_per_minute)
    ...
    await writer.stop()                  # writes everything still queued

**Rows.** One row per call (``cdrs``, :class:`~pbxcore.tenancy.models.Cdr`), its ``id`` given
by :meth:`CdrWriter.call_started`. A call whose start is written before it ends has an *open
row* first: ``disposition`` ``"in_progress"``, no ``ended_at``, ``node_id`` this node; its end
is an ``UPDATE`` of that row. A call that ends before its start was written is one ``INSERT``
of the final row. An answer on an open row is an ``UPDATE`` too (so the API shows it and a
recovery knows it). Each batch (up to ``batch`` records, gathered for at most
``flush_interval`` seconds) is one transaction. Inserts are upserts on ``id``, so a batch whose
commit succeeded but was reported failed (the connection died at that moment) is retried
without a duplicate.

**Fields.** ``duration_s`` counts from the start and ``billsec`` from the answer, both to the
end, in whole seconds rounded up (a started second counts). ``disposition`` is ``"answered"``
exactly when the call was answered. ``cost`` is ``None`` without a ``cost_per_minute``, else
per ``rounding``: ``"second"`` bills ``billsec / 60 * rate``, ``"minute"`` bills each started
minute, ``ceil(billsec / 60) * rate``; both to 6 decimals (the column's ``Numeric(12, 6)``),
half up. Times are aware datetimes (``now`` by default); a time before the previous event of
the same call (the wall clock stepped back) is taken as that event's time.

**Queue.** It holds at most one record per call: a call's later event updates its queued
record rather than adding one (the record is the call's latest state, read when its batch is
written). Records are *progress* records (a start, or an answer of an open row) or *ended*
records (the call's final state); ended ones are written first. When the database is
unavailable the batch goes back to the queue and is retried with a doubling delay
(``retry_delay`` up to ``max_retry_delay``), the queue keeps filling, and it is bounded by
``max_queue`` records. A new record beyond that drops the oldest *progress* record: that
loses nothing of the CDR, since the call's ended record carries all its fields and then
inserts the whole row; only a crash before the end would lose the call. Only when the
queue holds nothing but ended records is the oldest of them dropped: that CDR is lost (and
its open row, if written, is closed as failed by the next :meth:`~CdrWriter.recover` of
this node). So an ended record is never dropped while the start of any call could go
instead. Both drops count and are logged (the first and every 1000th).

A record the database refuses on its own (an integrity or data error: a tenant deleted
during the call, say) is found by writing that batch again record by record, logged and
counted as ``rejected``; it never blocks the others.

**Crash recovery.** :meth:`CdrWriter.recover` (the first thing the writer's task does)
closes the open rows of *this* ``node_id`` that no call of this writer owns: they were left
by a crash. Each becomes ``"failed"`` with ``ended_at`` its last known time (its last write,
never before its start or answer) and the durations to then; ``cost`` stays ``None`` (the
rate is not stored). Rows of other nodes are never touched: give each node its own id.

The methods must be called from the event loop's thread. :meth:`CdrWriter.counters` gives the
numbers for metrics (:class:`CdrCounters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, get_args

from sqlalchemy import Text, bindparam, cast, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database, DatabaseUnavailableError

__all__ = [
    "DISPOSITIONS",
    "IN_PROGRESS",
    "CallRecord",
    "CdrCounters",
    "CdrWriter",
    "Direction",
    "Disposition",
    "Rounding",
    "call_cost",
]

log = logging.getLogger(__name__)

Direction = Literal["internal", "inbound", "outbound"]
Disposition = Literal["answered", "busy", "no_answer", "failed", "cancelled"]
Rounding = Literal["second", "minute"]
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)
IN_PROGRESS = "in_progress"

MICRO = Decimal("0.000001")
LOG_EVERY_DROP = 1000
# the column widths of text the network chose (a From user part can be anything)
CALL_ID_CHARS = 200
NUMBER_CHARS = 64
EXTENSION_CHARS = 16


def call_cost(billsec: int, cost_per_minute: Decimal | None, rounding: Rounding) -> Decimal | None:
    """The cost of ``billsec`` seconds at ``cost_per_minute``, per second or per started
    minute, to 6 decimals (half up); ``None`` without a rate."""
    if cost_per_minute is None:
        return None
    rate = Decimal(cost_per_minute)
    cost = math.ceil(billsec / 60) * rate if rounding == "minute" else billsec * rate / 60
    return cost.quantize(MICRO, rounding=ROUND_HALF_UP)


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, math.ceil((end - start).total_seconds()))


def _aware(at: datetime | None, what: str) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise ValueError(f"{what}: must be an aware datetime, got {at!r}")
    return at.astimezone(UTC)


@dataclass(eq=False, slots=True)
class CallRecord:
    """One call as the CDR writer knows it: what :meth:`CdrWriter.call_started` returns and
    the other methods take. Read its fields; only the writer changes them."""

    id: str
    call_id: str
    operator_id: str
    tenant_id: str
    direction: Direction
    from_number: str
    to_number: str
    extension: str | None
    trunk_id: str | None
    started_at: datetime
    explain_json: str | None  # the explain trace as JSON text, serialized once at the start
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    disposition: str = IN_PROGRESS
    cost_per_minute: Decimal | None = None
    stored: bool = field(default=False, repr=False)  # its row is committed

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def explain(self) -> dict[str, Any] | None:
        """The explain trace as it was at the start of the call (a new copy each time)."""
        return None if self.explain_json is None else json.loads(self.explain_json)

    @property
    def duration_s(self) -> int:
        return 0 if self.ended_at is None else _seconds(self.started_at, self.ended_at)

    @property
    def billsec(self) -> int:
        if self.ended_at is None or self.answered_at is None:
            return 0
        return _seconds(self.answered_at, self.ended_at)

    def _last_time(self) -> datetime:
        return self.ended_at or self.answered_at or self.started_at


@dataclass(frozen=True, slots=True)
class CdrCounters:
    """The writer's numbers for metrics: ``queued`` and ``in_progress`` now, the rest since
    it was created."""

    queued: int  # records waiting to be written (including a batch being written)
    in_progress: int  # calls started and not ended
    written: int  # records written (rows inserted or updated)
    batches: int  # transactions committed
    retries: int  # batches that failed (database unavailable) and were queued again
    dropped_starts: int  # progress records dropped, queue full (the row comes at the end)
    dropped_ended: int  # ended records dropped, queue full of them: CDRs lost
    rejected: int  # records the database refused (integrity or data error)
    recovered: int  # open rows of this node closed as failed by recover()
    last_error: str | None

    @property
    def dropped(self) -> int:
        return self.dropped_starts + self.dropped_ended


class CdrWriter:
    """Writes the CDRs of one node's calls in batches; see the module documentation.

    ``node_id`` names this node on the open rows (unique per node, stable across restarts);
    ``batch`` records per transaction; ``flush_interval`` seconds at most before a partial
    batch is written; ``rounding`` of the cost, ``"second"`` or ``"minute"``; ``max_queue``
    records held while the database is unavailable.
    """

    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        batch: int = 200,
        flush_interval: float = 0.5,
        rounding: Rounding = "second",
        max_queue: int = 100_000,
        retry_delay: float = 0.1,
        max_retry_delay: float = 10.0,
    ) -> None:
        if not isinstance(node_id, str) or not 0 < len(node_id) <= 64:
            raise ValueError(f"node_id: 1 to 64 characters, got {node_id!r}")
        if rounding not in get_args(Rounding):
            raise ValueError(f"rounding: must be second or minute, got {rounding!r}")
        if batch < 1:
            raise ValueError(f"batch: must be at least 1, got {batch!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue: must be at least 1, got {max_queue!r}")
        if not 0 <= flush_interval < math.inf:
            raise ValueError(f"flush_interval: seconds, got {flush_interval!r}")
        if not 0 < retry_delay <= max_retry_delay < math.inf:
            raise ValueError("retry_delay and max_retry_delay: 0 < retry_delay <= max_retry_delay")
        self.db = db
        self.node_id = node_id
        self.batch = batch
        self.flush_interval = flush_interval
        self.rounding: Rounding = rounding
        self.max_queue = max_queue
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        # one record per call, keyed by CallRecord.id, oldest first
        self._progress: OrderedDict[str, CallRecord] = OrderedDict()
        self._ended: OrderedDict[str, CallRecord] = OrderedDict()
        self._in_flight: list[CallRecord] = []
        self._open: dict[str, CallRecord] = {}
        self._wake = asyncio.Event()  # the first record, a full batch, flush or stop
        self._poke = asyncio.Event()  # flush or stop: cut the current retry delay short
        self._urgent = False  # flush: no waiting for a batch to fill
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._recovering = False
        self._task: asyncio.Task[None] | None = None
        self._written = 0
        self._batches = 0
        self._retries = 0
        self._dropped_starts = 0
        self._dropped_ended = 0
        self._rejected = 0
        self._recovered = 0
        self._last_error: str | None = None
        self._insert_stmt: Any = None  # built on the first batch, then reused (compiled once)
        self._update_stmt: Any = None

    def __repr__(self) -> str:
        return f"CdrWriter(node_id={self.node_id!r}, queued={self._queued()})"

    # -- the call path: memory only, never awaits ---------------------------------------

    def call_started(
        self,
        *,
        call_id: str,
        operator_id: str,
        tenant_id: str,
        direction: Direction,
        from_number: str,
        to_number: str,
        extension: str | None = None,
        trunk_id: str | None = None,
        started_at: datetime | None = None,
        explain: dict[str, Any] | None = None,
    ) -> CallRecord:
        """A new call: queues its open row and returns its record (``.id`` is the CDR id).

        Raises :class:`ValueError` on a bad ``direction`` or a naive time (a bug of the
        caller); text longer than its column (the call id, numbers) is cut to fit, and the
        ``explain`` trace is copied as JSON (what is not JSON becomes its ``str``)."""
        if direction not in ("internal", "inbound", "outbound"):
            raise ValueError(f"direction: internal, inbound or outbound, got {direction!r}")
        call = CallRecord(
            id=m.new_id("cdr"),
            call_id=call_id[:CALL_ID_CHARS],
            operator_id=operator_id,
            tenant_id=tenant_id,
            direction=direction,
            from_number=from_number[:NUMBER_CHARS],
            to_number=to_number[:NUMBER_CHARS],
            extension=None if extension is None else extension[:EXTENSION_CHARS],
            trunk_id=trunk_id,
            started_at=_aware(started_at, "started_at"),
            # the JSON text is both the copy (later changes of the dict do not reach the
            # CDR) and what is written: the database gets it without a second dumps
            explain_json=None if explain is None else json.dumps(explain, default=str),
        )
        self._open[call.id] = call
        self._enqueue(call)
        return call

    def call_answered(
        self, call: CallRecord, at: datetime | None = None, *, trunk_id: str | None = None
    ) -> None:
        """The call was answered (the first answer counts; after its end, ignored);
        ``trunk_id``: the trunk that answered, after failover from the first candidate."""
        if call.ended or call.answered_at is not None:
            return
        if trunk_id is not None:
            call.trunk_id = trunk_id
        call.answered_at = max(_aware(at, "at"), call.started_at)
        self._enqueue(call)

    def call_ended(
        self,
        call: CallRecord,
        at: datetime | None = None,
        *,
        disposition: Disposition,
        cost_per_minute: Decimal | None = None,
    ) -> None:
        """The call ended: queues its final state. ``disposition`` is ``"answered"`` exactly
        when :meth:`call_answered` was called (else :class:`ValueError`); ``cost_per_minute``
        is the matched route's rate (``None``: no cost). A second end is ignored (logged)."""
        if call.ended:
            log.warning("CDR %s (call %s) ended twice; the first end stands", call.id, call.call_id)
            return
        if disposition not in DISPOSITIONS:
            raise ValueError(f"disposition: one of {', '.join(DISPOSITIONS)}, got {disposition!r}")
        if (disposition == "answered") != (call.answered_at is not None):
            raise ValueError(
                f"disposition: {disposition!r} for a call "
                f"{'answered' if call.answered_at is not None else 'never answered'}"
            )
        call.ended_at = max(_aware(at, "at"), call._last_time())
        call.disposition = disposition
        call.cost_per_minute = None if cost_per_minute is None else Decimal(cost_per_minute)
        self._open.pop(call.id, None)
        self._enqueue(call)

    def counters(self) -> CdrCounters:
        return CdrCounters(
            queued=self._queued(),
            in_progress=len(self._open),
            written=self._written,
            batches=self._batches,
            retries=self._retries,
            dropped_starts=self._dropped_starts,
            dropped_ended=self._dropped_ended,
            rejected=self._rejected,
            recovered=self._recovered,
            last_error=self._last_error,
        )

    def _queued(self) -> int:
        return len(self._progress) + len(self._ended) + len(self._in_flight)

    def _enqueue(self, call: CallRecord) -> None:
        self._progress.pop(call.id, None)
        if call.id not in self._ended:
            (self._ended if call.ended else self._progress)[call.id] = call
        self._idle.clear()
        self._trim()
        pending = len(self._progress) + len(self._ended)
        if pending == 1 or pending >= self.batch:
            self._wake.set()

    def _trim(self) -> None:
        while self._queued() > self.max_queue and (self._progress or self._ended):
            if self._progress:
                _, call = self._progress.popitem(last=False)
                self._dropped_starts += 1
                n, kind = self._dropped_starts, "start"
            else:
                _, call = self._ended.popitem(last=False)
                self._dropped_ended += 1
                n, kind = self._dropped_ended, "ended"
            if n == 1 or n % LOG_EVERY_DROP == 0:
                (log.warning if kind == "start" else log.error)(
                    "CDR queue full (%d records, database unavailable: %s): dropped %d %s "
                    "record(s) so far, the last of call %s",
                    self.max_queue,
                    self._last_error,
                    n,
                    kind,
                    call.call_id,
                )

    # -- the writer task ---------------------------------------------------------------

    def start(self) -> None:
        """Starts the task: :meth:`recover` (retried while the database is unavailable),
        then the batches."""
        if self._task is None:
            self._stopping = False
            self._recovering = True
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cdr-writer")

    async def flush(self) -> None:
        """Waits until everything queued so far is written (forever while the database is
        unavailable: bound it with ``asyncio.timeout``)."""
        if self._task is None:
            raise RuntimeError("the CDR writer is not started")
        self._urgent = True
        self._wake.set()
        self._poke.set()
        await self._idle.wait()

    async def stop(self, timeout: float | None = 30.0) -> int:
        """Writes everything queued, then ends the task. Returns the number of records left
        unwritten: 0, unless the database stayed unavailable for ``timeout`` seconds (then
        the task is cancelled and the loss logged)."""
        task = self._task
        if task is None:
            return self._queued()
        self._stopping = True
        self._wake.set()
        self._poke.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        left = self._queued()
        if left:
            log.error(
                "CDR writer stopped with %d record(s) unwritten (database unavailable: %s)",
                left,
                self._last_error,
            )
        return left

    async def _run(self) -> None:
        await self._retrying(self._recover_once)
        self._recovering = False
        while True:
            if not (self._progress or self._ended):
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                # a partial batch waits for more records, at most flush_interval
                if not self._stopping and not self._urgent:
                    self._wake.clear()
                    if len(self._progress) + len(self._ended) < self.batch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._urgent = False
                continue
            await self._retrying(self._write_next_batch)

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        """Runs ``step`` until it succeeds, with a doubling delay while the database is
        unavailable; flush or stop cut the current delay short."""
        delay = self.retry_delay
        while True:
            self._poke.clear()
            try:
                await step()
            except DatabaseUnavailableError as exc:
                self._retries += 1
                self._last_error = str(exc)
                if self._retries == 1 or self._retries % 100 == 0:
                    log.warning("CDR writer: %s; retrying (%d retries)", exc, self._retries)
            except Exception as exc:  # a bug must not end the task: log it, retry later
                self._retries += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("CDR writer failed; retrying (%d retries)", self._retries)
            else:
                return
            if not self._poke.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _write_next_batch(self) -> None:
        batch: list[CallRecord] = []
        for source in (self._ended, self._progress):
            while source and len(batch) < self.batch:
                batch.append(source.popitem(last=False)[1])
        self._in_flight = batch
        done: set[str] = set()
        try:
            try:
                await self._write(batch)
                done.update(c.id for c in batch)
            except DatabaseUnavailableError:
                raise
            except Exception:
                # one bad record must not hold the others: write them one by one
                for call in batch:
                    try:
                        await self._write([call])
                    except DatabaseUnavailableError:
                        raise
                    except Exception as exc:
                        self._reject(call, exc)
                    done.add(call.id)
        finally:
            self._in_flight = []
            self._requeue([c for c in batch if c.id not in done])

    def _requeue(self, calls: list[CallRecord]) -> None:
        """Puts back, oldest first, the records of a batch that was not written (unless a
        later event of the call queued it again meanwhile: that record is newer)."""
        for call in reversed(calls):
            if call.id in self._ended or call.id in self._progress:
                continue
            target = self._ended if call.ended else self._progress
            target[call.id] = call
            target.move_to_end(call.id, last=False)
        self._trim()

    def _reject(self, call: CallRecord, exc: Exception) -> None:
        self._rejected += 1
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        log.error("CDR of call %s refused by the database, dropped: %s", call.call_id, first)

    async def _write(self, calls: list[CallRecord]) -> None:
        now = datetime.now(UTC)
        inserts = [self._row(c, now) for c in calls if not c.stored]
        updates = [self._changes(c, now) for c in calls if c.stored]
        if self._insert_stmt is None:
            self._insert_stmt, self._update_stmt = self._upsert(), self._update()
        # Core executemany of plain dicts with statements built once: no ORM unit of work
        async with self.db.session() as session:
            conn = await session.connection()
            if inserts:
                await conn.execute(self._insert_stmt, inserts)
            if updates:
                await conn.execute(self._update_stmt, updates)
            await session.commit()
        for call in calls:
            call.stored = True
        self._written += len(calls)
        self._batches += 1

    def _explain_param(self) -> Any:
        # the explain text goes in as it is: JSONB by a cast on PostgreSQL; SQLite's JSON
        # column is text already
        text = bindparam("explain_json", type_=Text)
        return cast(text, JSONB) if self.db.dialect == "postgresql" else text

    def _upsert(self) -> Any:
        table = m.Base.metadata.tables["cdrs"]
        stmt = (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(table)
        stmt = stmt.values(
            {c.name: bindparam(c.name, type_=c.type) for c in table.columns if c.name != "explain"}
            | {"explain": self._explain_param()}
        )
        keep = {"id", "created_at"}
        return stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keep},
        )

    def _update(self) -> Any:
        # an open row's later state: what an answer or the end can change
        table = m.Base.metadata.tables["cdrs"]
        return (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(name, type_=table.c[name].type) for name in _CHANGES})
        )

    def _changes(self, call: CallRecord, now: datetime) -> dict[str, Any]:
        return {
            "row_id": call.id,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "duration_s": call.duration_s,
            "billsec": call.billsec,
            "disposition": call.disposition,
            "trunk_id": call.trunk_id,
            "cost": call_cost(call.billsec, call.cost_per_minute, self.rounding)
            if call.ended
            else None,
            "updated_at": now,
        }

    def _row(self, call: CallRecord, now: datetime) -> dict[str, Any]:
        return {
            "id": call.id,
            "operator_id": call.operator_id,
            "tenant_id": call.tenant_id,
            "call_id": call.call_id,
            "direction": call.direction,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "extension": call.extension,
            "started_at": call.started_at,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "duration_s": call.duration_s,
            "billsec": call.billsec,
            "disposition": call.disposition,
            "trunk_id": call.trunk_id,
            "cost": call_cost(call.billsec, call.cost_per_minute, self.rounding)
            if call.ended
            else None,
            "explain_json": call.explain_json,
            "node_id": self.node_id,
            "created_at": now,
            "updated_at": now,
        }

    # -- crash recovery -----------------------------------------------------------------

    async def recover(self) -> int:
        """Closes this node's open rows that no call of this writer owns (left by a crash)
        as ``"failed"``, ended at their last known time; returns how many. Raises
        :class:`~pbxcore.tenancy.db.DatabaseUnavailableError` when the store is down."""
        owned = set(self._open) | set(self._ended) | {c.id for c in self._in_flight}
        c = m.Cdr
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(c).where(c.node_id == self.node_id, c.disposition == IN_PROGRESS)
                )
            ).all()
            closed = [row for row in rows if row.id not in owned]
            for row in closed:
                ended = max(t for t in (row.started_at, row.answered_at, row.updated_at) if t)
                row.ended_at = ended
                row.duration_s = _seconds(row.started_at, ended)
                row.billsec = 0 if row.answered_at is None else _seconds(row.answered_at, ended)
                row.disposition = "failed"
                row.cost = None
            await session.commit()
        if closed:
            self._recovered += len(closed)
            log.warning(
                "closed %d call(s) of node %s left in progress (a crash) as failed: %s",
                len(closed),
                self.node_id,
                ", ".join(_call_ids(closed)),
            )
        return len(closed)

    async def _recover_once(self) -> None:
        await self.recover()


_CHANGES = (
    "answered_at",
    "ended_at",
    "duration_s",
    "billsec",
    "disposition",
    "trunk_id",
    "cost",
    "updated_at",
)


def _call_ids(rows: Iterable[m.Cdr], limit: int = 20) -> list[str]:
    ids = [r.call_id for r in rows]
    return ids[:limit] + ([f"... {len(ids) - limit} more"] if len(ids) > limit else [])
