"""Platform events: what an operator reads at ``/api/v1/operators/{op}/events``.

The lower layers report what happens through public hooks (the location service's
``listener``, :attr:`TrunkRegistrations.on_state <pbxcore.pbx.trunks.TrunkRegistrations>`,
:attr:`B2bua.on_failure <pbxcore.pbx.b2bua.B2bua>`); :class:`PlatformEvents` turns each
report into an :class:`Event` of the operator concerned and hands it to an
:class:`EventWriter`, which stores events in the ``events`` table in batches::

    writer = EventWriter(db, node_id="pbx-1", keep_days=7, keep_rows=1_000_000)
    writer.start()
    events = PlatformEvents(snapshots, writer)
    location.listener = events.bindings_changed
    trunks.on_state = events.trunk_state
    b2bua.on_failure = events.call_failed
    ...
    await writer.stop()

Event types: ``registration`` and ``unregistration`` (a phone's contact added to, or removed
from, an extension's AOR; refreshes are not events), ``trunk_state`` (a registering trunk
became ``registered``, ``failed`` or ``unregistered``) and ``call_failed`` (a call refused
or not connected, with the SIP status the caller got).

**The writer** is the CDR writer's shape, simpler: :meth:`EventWriter.add` only touches
memory (the call and registration paths never wait on the database). The queue holds at
most ``max_queue`` events; beyond that the oldest is dropped and counted (``dropped``, a
metric): events are for watching, losing some under a flood is better than holding the
calls. A batch the database cannot take (down) goes back to the queue and is retried with
a doubling delay; one it refuses (a bad row) is written event by event and the bad ones
counted as ``rejected``. **Retention:** every ``prune_interval`` seconds the writer deletes
the events older than ``keep_days`` and those beyond the newest ``keep_rows`` (on a
database shared by several nodes each node prunes; the deletes are idempotent).

Nothing secret goes into an event: AORs, contacts, user agents, trunk ids, statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import delete, insert, select

from pbxcore.pbx.b2bua import CallFailure
from pbxcore.pbx.trunks import TrunkStatus
from pbxcore.sip.location import Binding
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database, DatabaseUnavailableError
from pbxcore.tenancy.snapshot import Snapshot

__all__ = ["EVENT_TYPES", "Event", "EventCounters", "EventType", "EventWriter", "PlatformEvents"]

log = logging.getLogger(__name__)

EventType = Literal["registration", "unregistration", "trunk_state", "call_failed"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
SUBJECT_CHARS = 200
CALL_ID_CHARS = 200
DETAIL_CHARS = 300  # each text value of ``detail``


@dataclass(frozen=True, slots=True)
class Event:
    """One platform event of ``operator_id`` (and of ``tenant_id``, when it is a tenant's)."""

    type: EventType
    operator_id: str
    subject: str
    tenant_id: str | None = None
    call_id: str | None = None
    status: int | None = None
    detail: dict[str, Any] | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class EventCounters:
    """The writer's numbers for metrics: ``queued`` now, the rest since it was created."""

    queued: int
    written: int
    batches: int
    retries: int
    dropped: int  # queue full: the oldest event went
    rejected: int  # refused by the database
    pruned: int  # deleted by retention
    last_error: str | None


class EventWriter:
    """Writes platform events in batches; see the module documentation."""

    def __init__(
        self,
        db: Database,
        *,
        node_id: str | None = None,
        batch: int = 200,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        keep_days: float = 7.0,
        keep_rows: int = 1_000_000,
        prune_interval: float = 300.0,
        retry_delay: float = 0.1,
        max_retry_delay: float = 10.0,
    ) -> None:
        if batch < 1 or max_queue < 1 or keep_rows < 1:
            raise ValueError("batch, max_queue and keep_rows: at least 1")
        if not 0 < keep_days < math.inf or not 0 < prune_interval < math.inf:
            raise ValueError("keep_days and prune_interval: positive and finite")
        if not 0 <= flush_interval < math.inf:
            raise ValueError(f"flush_interval: seconds, got {flush_interval!r}")
        if not 0 < retry_delay <= max_retry_delay < math.inf:
            raise ValueError("retry_delay and max_retry_delay: 0 < retry_delay <= max_retry_delay")
        self.db = db
        self.node_id = None if node_id is None else node_id[:64]
        self.batch = batch
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.keep_days = keep_days
        self.keep_rows = keep_rows
        self.prune_interval = prune_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._queue: deque[Event] = deque()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        self._written = self._batches = self._retries = 0
        self._dropped = self._rejected = self._pruned = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"EventWriter(node_id={self.node_id!r}, queued={len(self._queue)})"

    # -- the producers' side: memory only ----------------------------------------------

    def add(self, event: Event) -> None:
        """Queue ``event`` (the oldest is dropped when the queue is full). Never waits."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("event queue full: %d event(s) dropped so far", self._dropped)
        self._queue.append(event)
        self._idle.clear()
        if len(self._queue) == 1 or len(self._queue) >= self.batch:
            self._wake.set()

    def counters(self) -> EventCounters:
        return EventCounters(
            queued=len(self._queue) + self._in_flight,
            written=self._written,
            batches=self._batches,
            retries=self._retries,
            dropped=self._dropped,
            rejected=self._rejected,
            pruned=self._pruned,
            last_error=self._last_error,
        )

    # -- the task ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-writer")

    async def flush(self) -> None:
        """Wait until everything queued so far is written (bound it with a timeout)."""
        if self._task is None:
            raise RuntimeError("the event writer is not started")
        self._wake.set()
        await self._idle.wait()

    async def stop(self, timeout: float = 10.0) -> int:
        """Write what is queued and end the task; the number of events left unwritten."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        left = len(self._queue)
        if left:
            log.warning("event writer stopped with %d event(s) unwritten", left)
        return left

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            if not self._queue:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._until_prune())
                if self._queue and not self._stopping and len(self._queue) < self.batch:
                    # a partial batch waits a little for more
                    await asyncio.sleep(self.flush_interval)
            try:
                if self._queue:
                    await self._write_batch()
                if time.monotonic() >= self._next_prune:
                    await self.prune()
            except DatabaseUnavailableError as exc:
                self._retries += 1
                self._last_error = str(exc)
                if self._retries == 1 or self._retries % 100 == 0:
                    log.warning("event writer: %s; retrying (%d retries)", exc, self._retries)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
            except Exception as exc:  # a bug must not end the task
                self._retries += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("event writer failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
            else:
                delay = self.retry_delay

    def _until_prune(self) -> float:
        return max(0.0, self._next_prune - time.monotonic())

    async def _write_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
        self._in_flight = len(batch)
        done = False
        try:
            try:
                await self._insert(batch)
                done = True
            except DatabaseUnavailableError:
                raise
            except Exception:
                for event in batch:  # one bad row must not hold the others
                    try:
                        await self._insert([event])
                    except DatabaseUnavailableError:
                        raise
                    except Exception as exc:
                        self._rejected += 1
                        log.error("event %s refused by the database: %s", event.type, exc)
                done = True
        finally:
            self._in_flight = 0
            if not done:  # back to the front, within the bound
                room = self.max_queue - len(self._queue)
                keep = batch[-room:] if room > 0 else []
                self._dropped += len(batch) - len(keep)
                self._queue.extendleft(reversed(keep))

    async def _insert(self, events: list[Event]) -> None:
        rows = [self._row(e) for e in events]
        async with self.db.session() as session:
            await session.execute(insert(m.PlatformEvent), rows)
            await session.commit()
        self._written += len(rows)
        self._batches += 1

    def _row(self, event: Event) -> dict[str, Any]:
        return {
            "id": m.new_id("evt"),
            "at": event.at,
            "operator_id": event.operator_id,
            "tenant_id": event.tenant_id,
            "type": event.type,
            "subject": event.subject[:SUBJECT_CHARS],
            "call_id": None if event.call_id is None else event.call_id[:CALL_ID_CHARS],
            "status": event.status,
            "node_id": self.node_id,
            "detail": _bounded(event.detail),
        }

    async def prune(self) -> int:
        """Delete the events past the retention (older than ``keep_days``, or beyond the
        newest ``keep_rows``); how many went."""
        self._next_prune = time.monotonic() + self.prune_interval
        e = m.PlatformEvent
        cutoff = datetime.now(UTC) - timedelta(days=self.keep_days)
        async with self.db.session() as session:
            gone = _rowcount(await session.execute(delete(e).where(e.at < cutoff)))
            oldest_kept = await session.scalar(
                select(e.at).order_by(e.at.desc()).offset(self.keep_rows - 1).limit(1)
            )
            if oldest_kept is not None:
                gone += _rowcount(await session.execute(delete(e).where(e.at < oldest_kept)))
            await session.commit()
        self._pruned += gone
        return int(gone)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def _bounded(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    if detail is None:
        return None
    return {
        str(k)[:64]: v[:DETAIL_CHARS] if isinstance(v, str) else v
        for k, v in detail.items()
        if v is None or isinstance(v, str | int | float | bool)
    }


class PlatformEvents:
    """The hooks of the lower layers, as events of the operator concerned."""

    def __init__(self, snapshot: Callable[[], Snapshot], writer: EventWriter) -> None:
        self._snapshot = snapshot
        self.writer = writer

    def bindings_changed(self, aor: str, before: list[Binding], after: list[Binding]) -> None:
        """The location service's listener: contacts added and removed for ``aor``."""
        realm = aor.rpartition("@")[2]
        tenant = self._snapshot().tenant_for_realm(realm)
        if tenant is None:
            return  # a realm of the users file, not a tenant's
        old = {b.contact for b in before}
        new = {b.contact for b in after}
        now = datetime.now(UTC)
        for kind, bindings, others in (
            ("registration", after, old),
            ("unregistration", before, new),
        ):
            for binding in _unique(bindings):
                if binding.contact in others:
                    continue
                self.writer.add(
                    Event(
                        type=kind,  # type: ignore[arg-type]
                        operator_id=tenant.operator_id,
                        tenant_id=tenant.id,
                        subject=aor,
                        call_id=binding.call_id,
                        detail={
                            "contact": binding.contact,
                            "source": binding.source,
                            "user_agent": binding.user_agent,
                            "expires_in": binding.expires_in(time.time())
                            if kind == "registration"
                            else 0,
                        },
                        at=now,
                    )
                )

    def trunk_state(self, operator_id: str, status: TrunkStatus, previous: str | None) -> None:
        """TrunkRegistrations' hook: a trunk's registration state changed."""
        if previous is None:
            return  # a trunk starting to register: its outcome is the event
        self.writer.add(
            Event(
                type="trunk_state",
                operator_id=operator_id,
                subject=status.trunk_id,
                status=status.last_status,
                detail={
                    "state": status.state,
                    "previous": previous,
                    "last_error": status.last_error,
                },
            )
        )

    def call_failed(self, failure: CallFailure) -> None:
        """The B2BUA's hook: a call refused or not connected."""
        if not failure.operator_id:
            return
        self.writer.add(
            Event(
                type="call_failed",
                operator_id=failure.operator_id,
                tenant_id=failure.tenant_id,
                subject=failure.to_number,
                call_id=failure.call_id,
                status=failure.status,
                detail={
                    "reason": failure.reason,
                    "from": failure.from_number,
                    "to": failure.to_number,
                    "trunk_id": failure.trunk_id,
                },
            )
        )


def _unique(bindings: Iterable[Binding]) -> list[Binding]:
    seen: set[str] = set()
    out = []
    for b in bindings:
        if b.contact not in seen:
            seen.add(b.contact)
            out.append(b)
    return out
