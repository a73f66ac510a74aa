"""Config snapshots: what the call path needs, compiled from the database into one value.

The SIP side never queries the database. It reads the current :class:`Snapshot`, an
immutable value with, per operator, the compiled :class:`~pbxcore.routing.RouteTable` of
each route table, its dial plans and trunks; tenants by id and by domain (the SIP realm),
with features, limits and their extensions' HA1 credentials; and DID -> tenant and
destination.

:class:`SnapshotService` owns the current snapshot. It is the store's
:class:`~pbxcore.tenancy.store.ChangeSink`: a committed change names what it touched (an
operator's trunks, one route table, one tenant's extensions, an operator's DIDs), the
service waits a short debounce, reloads only those parts, builds a new snapshot that shares
everything else with the old one, and swaps it in with one assignment. A reader holds the
snapshot it started with, so a call sees one consistent configuration from start to end.

When the database is unreachable the rebuild fails, the last snapshot stays in service, and
the pending parts are retried with backoff: SIP keeps serving from the last good config.

:class:`SnapshotCredentialStore` is the registrar's credential store over the current
snapshot (with an optional fallback store, such as the ``--users`` file, for realms that are
not tenants).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pbxcore.routing import DialPlan, RouteEntry, RouteTable
from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.sip.credentials import CredentialStore
from pbxcore.tenancy import models as m
from pbxcore.tenancy.compile import (
    TrunkConfig,
    compile_dial_plan,
    compile_route_table,
    compile_trunk,
    route_entry,
)
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.store import Change

__all__ = [
    "DidConfig",
    "ExtensionConfig",
    "IvrConfig",
    "OperatorConfig",
    "ScheduleConfig",
    "Snapshot",
    "SnapshotCredentialStore",
    "SnapshotService",
    "TenantConfig",
    "TenantLimits",
    "build_snapshot",
]

log = logging.getLogger("pbxcore.snapshot")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExtensionConfig:
    id: str
    number: str
    name: str
    enabled: bool
    ha1: Mapping[DigestAlgorithm, str]  # empty without a SIP password
    dial_plan_id: str | None
    forwarding: Mapping[str, Any]

    def __repr__(self) -> str:  # never print HA1s into logs
        return f"ExtensionConfig(id={self.id!r}, number={self.number!r})"


@dataclass(frozen=True, slots=True)
class IvrConfig:
    """A voice menu as the call path reads it (destinations as stored: ``{"type", ...}``)."""

    id: str
    name: str
    greeting_prompt_id: str | None
    options: Mapping[str, Mapping[str, Any]]  # digit -> destination
    timeout_s: int
    invalid_prompt_id: str | None
    max_retries: int
    default_destination: Mapping[str, Any] | None
    direct_dial: bool


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """Business hours as the call path reads them: weekly periods and holidays in
    ``time_zone``, and where calls go when open and when closed."""

    id: str
    name: str
    time_zone: str
    weekly: tuple[tuple[frozenset[str], str, str], ...]  # (days, "HH:MM" open, close)
    holidays: frozenset[str]  # ISO dates
    open_destination: Mapping[str, Any] | None
    closed_destination: Mapping[str, Any] | None

    def is_open(self, at: datetime) -> bool:
        """Whether the business is open at ``at`` (an aware time), in its own zone."""
        local = at.astimezone(ZoneInfo(self.time_zone))
        if local.date().isoformat() in self.holidays:
            return False
        day = _WEEKDAYS[local.weekday()]
        clock = local.strftime("%H:%M")
        return any(day in days and opens <= clock < closes for days, opens, closes in self.weekly)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class TenantLimits:
    max_extensions: int
    max_concurrent_calls: int
    max_dids: int
    international_calls: bool
    max_call_duration_s: int | None


@dataclass(frozen=True, slots=True)
class TenantConfig:
    id: str
    operator_id: str
    name: str
    slug: str
    domain: str
    status: str
    features: frozenset[str]
    limits: TenantLimits
    route_table_id: str | None
    dedicated_trunk_id: str | None
    dial_plan_id: str | None
    time_zone: str
    digest_algorithms: tuple[DigestAlgorithm, ...]  # challenge order, first offered first
    extensions: Mapping[str, ExtensionConfig]  # by number
    ivrs: Mapping[str, IvrConfig] = field(default_factory=dict)  # by id
    schedules: Mapping[str, ScheduleConfig] = field(default_factory=dict)  # by id

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class DidConfig:
    number: str  # E.164 with +
    operator_id: str
    tenant_id: str
    destination: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    id: str
    name: str
    domain: str
    branding: Mapping[str, Any]
    trunks: Mapping[str, TrunkConfig]
    dial_plans: Mapping[str, DialPlan]
    route_tables: Mapping[str, RouteTable]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent configuration of the whole platform (never mutated once built)."""

    version: int = 0
    operators: Mapping[str, OperatorConfig] = field(default_factory=dict)
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    tenants_by_domain: Mapping[str, TenantConfig] = field(default_factory=dict)
    dids: Mapping[str, DidConfig] = field(default_factory=dict)

    def tenant_for_realm(self, realm: str) -> TenantConfig | None:
        return self.tenants_by_domain.get(realm.lower())

    def did(self, number: str) -> tuple[TenantConfig, DidConfig] | None:
        """The tenant a DID (E.164 with ``+``) belongs to, with its destination."""
        found = self.dids.get(number)
        if found is None:
            return None
        tenant = self.tenants.get(found.tenant_id)
        return None if tenant is None else (tenant, found)

    @property
    def extension_count(self) -> int:
        return sum(len(t.extensions) for t in self.tenants.values())


# -- loading parts from the database ---------------------------------------------------------

_ROUTE_COLUMNS = (
    m.Route.route_table_id,
    m.Route.prefix,
    m.Route.trunk_id,
    m.Route.priority,
    m.Route.weight,
    m.Route.cost_per_minute,
    m.Route.enabled,
)
_EXTENSION_COLUMNS = (
    m.Extension.tenant_id,
    m.Extension.id,
    m.Extension.number,
    m.Extension.name,
    m.Extension.enabled,
    m.Extension.ha1_md5,
    m.Extension.ha1_sha256,
    m.Extension.dial_plan_id,
    m.Extension.forwarding,
)


async def _route_tables(
    session: AsyncSession, operator_id: str, table_ids: Sequence[str] | None = None
) -> dict[str, RouteTable]:
    """Compiled route tables of an operator (all, or those named), straight from columns."""
    tables = select(m.RouteTableRow.id).where(m.RouteTableRow.operator_id == operator_id)
    if table_ids is not None:
        tables = tables.where(m.RouteTableRow.id.in_(table_ids))
    ids = list((await session.scalars(tables)).all())
    rows: dict[str, list[Any]] = {i: [] for i in ids}
    if ids:
        query = select(*_ROUTE_COLUMNS).where(m.Route.operator_id == operator_id)
        if table_ids is not None:
            query = query.where(m.Route.route_table_id.in_(ids))
        for row in await session.execute(query.order_by(m.Route.created_at, m.Route.id)):
            if row.route_table_id in rows:
                rows[row.route_table_id].append(row)
    return {i: compile_route_table(r) for i, r in rows.items()}


async def _patched_table(
    session: AsyncSession, table: RouteTable, table_id: str, prefixes: set[str]
) -> RouteTable:
    """``table`` with the routes of ``prefixes`` reloaded (the other prefixes kept as they
    are compiled): a change to a few routes of a large table is not a recompile."""
    groups: dict[str, list[RouteEntry]] = {p: [] for p in prefixes}
    if prefixes:
        query = (
            select(*_ROUTE_COLUMNS)
            .where(m.Route.route_table_id == table_id, m.Route.prefix.in_(sorted(prefixes)))
            .order_by(m.Route.created_at, m.Route.id)
        )
        for row in await session.execute(query):
            groups[row.prefix].append(route_entry(row))
    return table.replace(groups)


async def _operator_core(
    session: AsyncSession, operator_id: str, route_tables: Mapping[str, RouteTable] | None
) -> OperatorConfig | None:
    """The operator with its trunks and dial plans; route tables given, or all loaded."""
    row = await session.get(m.Operator, operator_id, populate_existing=True)
    if row is None:
        return None
    trunks = await session.scalars(select(m.Trunk).where(m.Trunk.operator_id == operator_id))
    plans = await session.scalars(
        select(m.DialPlanRow).where(m.DialPlanRow.operator_id == operator_id)
    )
    if route_tables is None:
        route_tables = await _route_tables(session, operator_id)
    return OperatorConfig(
        id=row.id,
        name=row.name,
        domain=row.domain,
        branding=dict(row.branding),
        trunks={t.id: compile_trunk(t) for t in trunks},
        dial_plans={p.id: compile_dial_plan(p) for p in plans},
        route_tables=route_tables,
    )


def _algorithms(names: Iterable[str]) -> tuple[DigestAlgorithm, ...]:
    out: list[DigestAlgorithm] = []
    for name in names:
        with contextlib.suppress(ValueError):  # an unknown name in old data offers nothing
            out.append(DigestAlgorithm.from_token(str(name)))
    return tuple(dict.fromkeys(out))


def _extension(row: Any) -> ExtensionConfig:
    ha1: dict[DigestAlgorithm, str] = {}
    if row.ha1_md5:
        ha1[DigestAlgorithm.MD5] = row.ha1_md5
    if row.ha1_sha256:
        ha1[DigestAlgorithm.SHA256] = row.ha1_sha256
    return ExtensionConfig(
        id=row.id,
        number=row.number,
        name=row.name,
        enabled=row.enabled,
        ha1=ha1,
        dial_plan_id=row.dial_plan_id,
        forwarding=dict(row.forwarding or {}),
    )


def _ivr(row: m.Ivr) -> IvrConfig:
    return IvrConfig(
        id=row.id,
        name=row.name,
        greeting_prompt_id=row.greeting_prompt_id,
        options={digit: dict(d) for digit, d in (row.options or {}).items()},
        timeout_s=row.timeout_s,
        invalid_prompt_id=row.invalid_prompt_id,
        max_retries=row.max_retries,
        default_destination=None
        if row.default_destination is None
        else dict(row.default_destination),
        direct_dial=row.direct_dial,
    )


def _schedule(row: m.Schedule) -> ScheduleConfig:
    return ScheduleConfig(
        id=row.id,
        name=row.name,
        time_zone=row.time_zone,
        weekly=tuple((frozenset(p["days"]), p["open"], p["close"]) for p in row.weekly or ()),
        holidays=frozenset(row.holidays or ()),
        open_destination=None if row.open_destination is None else dict(row.open_destination),
        closed_destination=(
            None if row.closed_destination is None else dict(row.closed_destination)
        ),
    )


def _tenant(
    row: m.Tenant,
    extensions: Mapping[str, ExtensionConfig],
    ivrs: Mapping[str, IvrConfig] | None = None,
    schedules: Mapping[str, ScheduleConfig] | None = None,
) -> TenantConfig:
    return TenantConfig(
        id=row.id,
        operator_id=row.operator_id,
        name=row.name,
        slug=row.slug,
        domain=row.domain.lower(),
        status=row.status,
        features=frozenset(row.features),
        limits=TenantLimits(
            max_extensions=row.max_extensions,
            max_concurrent_calls=row.max_concurrent_calls,
            max_dids=row.max_dids,
            international_calls=row.international_calls,
            max_call_duration_s=row.max_call_duration_s,
        ),
        route_table_id=row.route_table_id,
        dedicated_trunk_id=row.dedicated_trunk_id,
        dial_plan_id=row.dial_plan_id,
        time_zone=row.time_zone,
        digest_algorithms=_algorithms(row.digest_algorithms),
        extensions=extensions,
        ivrs=ivrs or {},
        schedules=schedules or {},
    )


async def _tenants(
    session: AsyncSession, *, operator_id: str | None = None, tenant_ids: Sequence[str] = ()
) -> list[TenantConfig]:
    """Tenants with their extensions, IVRs and schedules: all, an operator's, or those
    named."""
    query = select(m.Tenant).execution_options(populate_existing=True)
    ext_query = select(*_EXTENSION_COLUMNS)
    if tenant_ids:
        query = query.where(m.Tenant.id.in_(tenant_ids))
        ext_query = ext_query.where(m.Extension.tenant_id.in_(tenant_ids))
    elif operator_id is not None:
        query = query.where(m.Tenant.operator_id == operator_id)
        ext_query = ext_query.where(m.Extension.operator_id == operator_id)
    rows = list((await session.scalars(query)).all())
    extensions: dict[str, dict[str, ExtensionConfig]] = {r.id: {} for r in rows}
    for ext in await session.execute(ext_query):
        group = extensions.get(ext.tenant_id)
        if group is not None:
            group[ext.number] = _extension(ext)
    scope: dict[str, Any] = {"operator_id": operator_id, "tenant_ids": tenant_ids}
    ivrs = await _by_tenant(session, m.Ivr, _ivr, rows, **scope)
    schedules = await _by_tenant(session, m.Schedule, _schedule, rows, **scope)
    return [_tenant(r, extensions[r.id], ivrs[r.id], schedules[r.id]) for r in rows]


async def _by_tenant(
    session: AsyncSession,
    model: Any,
    convert: Callable[[Any], T],
    tenants: Sequence[m.Tenant],
    *,
    operator_id: str | None,
    tenant_ids: Sequence[str],
) -> dict[str, dict[str, T]]:
    """The ``model`` rows (menus, schedules) of ``tenants`` as their configs, by tenant id
    and then by id; the same scope as the tenants' own query."""
    query = select(model).execution_options(populate_existing=True)
    if tenant_ids:
        query = query.where(model.tenant_id.in_(tenant_ids))
    elif operator_id is not None:
        query = query.where(model.operator_id == operator_id)
    found: dict[str, dict[str, T]] = {t.id: {} for t in tenants}
    for row in (await session.scalars(query)).all():
        kept = found.get(row.tenant_id)
        if kept is not None:
            kept[row.id] = convert(row)
    return found


async def _patch_extensions(
    session: AsyncSession, tenants: dict[str, TenantConfig], patches: Mapping[str, set[str]]
) -> None:
    """Reload the named extensions (gone ones leave; a changed number moves) in place of
    reloading their tenants whole: the cost follows the change, not the tenant's size."""
    ids = sorted(set().union(*patches.values()))
    fresh: dict[str, list[Any]] = {}
    for start in range(0, len(ids), 500):
        query = select(*_EXTENSION_COLUMNS).where(m.Extension.id.in_(ids[start : start + 500]))
        for ext in await session.execute(query):
            fresh.setdefault(ext.tenant_id, []).append(ext)
    for tenant_id, changed in patches.items():
        tenant = tenants[tenant_id]
        extensions = {n: e for n, e in tenant.extensions.items() if e.id not in changed}
        for ext in fresh.get(tenant_id, ()):
            extensions[ext.number] = _extension(ext)
        tenants[tenant_id] = replace(tenant, extensions=extensions)


async def _dids(session: AsyncSession, operator_id: str | None = None) -> list[DidConfig]:
    """Assigned DIDs (a free pool number routes nowhere), of one operator or all."""
    query = select(m.Did.number, m.Did.operator_id, m.Did.tenant_id, m.Did.destination).where(
        m.Did.tenant_id.is_not(None)
    )
    if operator_id is not None:
        query = query.where(m.Did.operator_id == operator_id)
    return [
        DidConfig(r.number, r.operator_id, r.tenant_id, r.destination)
        for r in await session.execute(query)
    ]


async def build_snapshot(session: AsyncSession, version: int = 1) -> Snapshot:
    """The whole platform's configuration, loaded in one session."""
    operators: dict[str, OperatorConfig] = {}
    for op_id in (await session.scalars(select(m.Operator.id))).all():
        core = await _operator_core(session, op_id, None)
        if core is not None:
            operators[op_id] = core
    tenants = {t.id: t for t in await _tenants(session) if t.operator_id in operators}
    dids = {d.number: d for d in await _dids(session) if d.tenant_id in tenants}
    return Snapshot(
        version=version,
        operators=operators,
        tenants=tenants,
        tenants_by_domain={t.domain: t for t in tenants.values()},
        dids=dids,
    )


# -- incremental rebuilds --------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """What to reload: operator cores, route tables (None: all), tenants, DID sets."""

    operators: set[str] = field(default_factory=set)
    tables: dict[str, set[str] | None] = field(default_factory=dict)
    # (operator, table) -> the prefixes changed in it (None: reload the whole table)
    prefixes: dict[tuple[str, str], set[str] | None] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)  # tenant id -> operator id
    tenant_sets: set[str] = field(default_factory=set)  # all tenants of these operators
    dids: set[str] = field(default_factory=set)
    # single extensions of a tenant not reloaded whole: tenant id -> (operator id, ext ids)
    extensions: dict[str, tuple[str, set[str]]] = field(default_factory=dict)

    def add(self, change: Change) -> None:
        op = change.operator_id
        if change.kind in ("operator", "trunks", "dial_plans"):
            self.operators.add(op)
            if change.kind == "operator":  # a new or deleted operator: everything of it
                self.tables[op] = None
                self.tenant_sets.add(op)
                self.dids.add(op)
        elif change.kind == "routes":
            if change.ref is None or self.tables.get(op, set()) is None:
                self.tables[op] = None
            else:
                wanted = self.tables.setdefault(op, set())
                assert wanted is not None
                wanted.add(change.ref)
                key = (op, change.ref)
                known = self.prefixes.get(key, set())
                if change.keys is None or known is None:
                    self.prefixes[key] = None
                else:
                    self.prefixes[key] = known | set(change.keys)
        elif change.kind in ("tenant", "extensions", "ivrs"):  # ivrs (and schedules): reload
            if change.tenant_id is None:
                self.tenant_sets.add(op)
            elif change.kind == "extensions" and change.ref is not None:
                self.extensions.setdefault(change.tenant_id, (op, set()))[1].add(change.ref)
            else:
                self.tenants[change.tenant_id] = op
            if change.kind == "tenant":  # a deleted tenant frees its DIDs
                self.dids.add(op)
        elif change.kind == "dids":
            self.dids.add(op)

    def __bool__(self) -> bool:
        return bool(
            self.operators
            or self.tables
            or self.tenants
            or self.tenant_sets
            or self.dids
            or self.extensions
        )

    def merge(self, other: _Pending) -> None:
        self.operators |= other.operators
        for op, tables in other.tables.items():
            mine = self.tables.get(op, set())
            self.tables[op] = None if tables is None or mine is None else mine | tables
        for key, prefixes in other.prefixes.items():
            known = self.prefixes.get(key, set())
            self.prefixes[key] = None if prefixes is None or known is None else known | prefixes
        self.tenants |= other.tenants
        self.tenant_sets |= other.tenant_sets
        self.dids |= other.dids
        for tenant_id, (op, ids) in other.extensions.items():
            self.extensions.setdefault(tenant_id, (op, set()))[1].update(ids)


async def _apply(session: AsyncSession, old: Snapshot, work: _Pending) -> Snapshot:
    """``old`` with the pending parts reloaded (everything else shared)."""
    operators = dict(old.operators)
    for op in work.operators | set(work.tables):
        previous = operators.get(op)
        tables = work.tables.get(op, set())  # set(): none asked, None: all of them
        route_tables: dict[str, RouteTable] | None = None
        if previous is not None and tables is not None:
            route_tables = dict(previous.route_tables)
            patch = {
                t: keys
                for t in tables
                if t in route_tables and (keys := work.prefixes.get((op, t))) is not None
            }
            for table_id, keys in patch.items():
                route_tables[table_id] = await _patched_table(
                    session, route_tables[table_id], table_id, keys
                )
            tables = tables - patch.keys()
            if tables:
                fresh = await _route_tables(session, op, sorted(tables))
                for table_id in tables:
                    if table_id in fresh:
                        route_tables[table_id] = fresh[table_id]
                    else:
                        route_tables.pop(table_id, None)  # the table was deleted
        if op in work.operators or previous is None:
            core = await _operator_core(session, op, route_tables)
            if core is None:
                operators.pop(op, None)  # the operator was deleted
            else:
                operators[op] = core
        else:
            if route_tables is None:
                route_tables = await _route_tables(session, op)
            operators[op] = replace(previous, route_tables=route_tables)

    tenants = dict(old.tenants)
    reload_ops = set(work.tenant_sets)
    gone_ops = {op for op in old.operators if op not in operators}
    for tenant in list(tenants.values()):
        if tenant.operator_id in reload_ops or tenant.operator_id in gone_ops:
            del tenants[tenant.id]
    for op in reload_ops - gone_ops:
        for tenant in await _tenants(session, operator_id=op):
            tenants[tenant.id] = tenant
    # extensions changed one by one: patched into the tenant, unless the tenant is reloaded
    # whole anyway or is not in the snapshot yet (then it is loaded whole)
    patches: dict[str, set[str]] = {}
    wanted = dict(work.tenants)
    for tenant_id, (op, ids) in work.extensions.items():
        if tenant_id in work.tenants or op in reload_ops or op in gone_ops:
            continue
        if tenant_id in tenants:
            patches[tenant_id] = ids
        else:
            wanted[tenant_id] = op
    single = [t for t, op in wanted.items() if op not in reload_ops and op not in gone_ops]
    if single:
        fresh_tenants = {t.id: t for t in await _tenants(session, tenant_ids=single)}
        for tenant_id in single:
            if tenant_id in fresh_tenants:
                tenants[tenant_id] = fresh_tenants[tenant_id]
            else:
                tenants.pop(tenant_id, None)
    if patches:
        await _patch_extensions(session, tenants, patches)
    tenants = {k: t for k, t in tenants.items() if t.operator_id in operators}

    dids = dict(old.dids)
    did_ops = work.dids | gone_ops
    if did_ops:
        dids = {k: d for k, d in dids.items() if d.operator_id not in did_ops}
        for op in work.dids - gone_ops:
            dids.update((d.number, d) for d in await _dids(session, op))
    if len(dids) != len(old.dids) or did_ops or single or reload_ops:
        dids = {k: d for k, d in dids.items() if d.tenant_id in tenants}

    same_tenants = tenants.keys() == old.tenants.keys() and all(
        tenants[k] is old.tenants[k] for k in tenants
    )
    by_domain = old.tenants_by_domain if same_tenants else {t.domain: t for t in tenants.values()}
    return Snapshot(
        version=old.version + 1,
        operators=operators,
        tenants=tenants,
        tenants_by_domain=by_domain,
        dids=dids,
    )


class SnapshotService:
    """The current snapshot, rebuilt part by part after each committed change.

    ``debounce`` seconds after the first change of a burst (by default: once the loop has
    run what is ready), everything the burst touched is reloaded in one session and swapped
    in; changes that arrive during a rebuild go into the next one, so under load rebuilds
    batch by themselves. :meth:`applied` lets a writer wait until its change is in effect
    (the API answers a write only then: the next REGISTER or call sees it), at most
    ``apply_timeout`` seconds. A failed rebuild (the database is down) keeps the last
    snapshot and retries with backoff up to ``max_retry`` seconds.
    """

    def __init__(
        self,
        db: Database,
        *,
        debounce: float = 0.0,
        retry: float = 0.5,
        max_retry: float = 30.0,
        apply_timeout: float = 2.0,
    ) -> None:
        self._db = db
        self._debounce = debounce
        self._apply_timeout = apply_timeout
        self._requested = 0  # reports of changes so far
        self._applied = 0  # reports whose changes are in the current snapshot
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._retry = retry
        self._max_retry = max_retry
        self._current = Snapshot()
        self._pending = _Pending()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[Callable[[Snapshot], None]] = []
        self.last_error: str | None = None
        self.last_build_seconds: float = 0.0

    @property
    def current(self) -> Snapshot:
        return self._current

    def __call__(self) -> Snapshot:
        return self._current

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener(snapshot)`` after each swap (on the event loop)."""
        self._listeners.append(listener)

    async def load(self) -> Snapshot:
        """A full build from the database (at start; raises if the store is down)."""
        started = time.perf_counter()
        async with self._db.read_session() as session:
            snapshot = await build_snapshot(session, self._current.version + 1)
        self.last_build_seconds = time.perf_counter() - started
        self._swap(snapshot)
        return snapshot

    # ChangeSink
    def changed(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self._pending.add(change)
        if changes:
            self._requested += 1
        if self._pending and (self._task is None or self._task.done()):
            self._idle.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="snapshot")

    async def applied(self) -> None:
        """Wait until every change reported so far is in the current snapshot (bounded by
        ``apply_timeout``: with the store down the write stands, the snapshot catches up)."""
        target = self._requested
        if self._applied >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self._apply_timeout)
        except TimeoutError:
            log.warning("a change is not in the snapshot yet: %s", self.last_error or "busy")

    async def settle(self) -> Snapshot:
        """Wait until every change reported so far is in the current snapshot."""
        await self._idle.wait()
        return self._current

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._idle.set()

    async def _run(self) -> None:
        delay = self._retry
        try:
            await asyncio.sleep(self._debounce)
            while self._pending:
                target = self._requested
                work, self._pending = self._pending, _Pending()
                try:
                    started = time.perf_counter()
                    async with self._db.read_session() as session:
                        snapshot = await _apply(session, self._current, work)
                    self.last_build_seconds = time.perf_counter() - started
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep serving the last snapshot
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "snapshot rebuild failed, still serving version %d; retry in %.1fs: %s",
                        self._current.version,
                        delay,
                        self.last_error,
                    )
                    work.merge(self._pending)
                    self._pending = work
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry)
                    continue
                delay = self._retry
                self.last_error = None
                self._swap(snapshot)
                self._applied = target
                self._wake()
        finally:
            if not self._pending:
                self._idle.set()

    def _wake(self) -> None:
        waiting = []
        for target, future in self._waiters:
            if target <= self._applied:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    def _swap(self, snapshot: Snapshot) -> None:
        self._current = snapshot
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("snapshot listener failed")


class SnapshotCredentialStore:
    """The registrar's :class:`CredentialStore` over the current snapshot.

    A tenant's domain is its realm, offered with the tenant's digest algorithms in its
    order; a suspended tenant's realm is not served; a disabled extension, or one without a
    SIP password, has no HA1. Realms that are no tenant's go to ``fallback`` (the users
    file), if any.
    """

    def __init__(
        self, snapshot: Callable[[], Snapshot], fallback: CredentialStore | None = None
    ) -> None:
        self._snapshot = snapshot
        self._fallback = fallback

    def realm_algorithms(self, realm: str) -> tuple[DigestAlgorithm, ...]:
        tenant = self._snapshot().tenant_for_realm(realm)
        if tenant is None:
            return () if self._fallback is None else self._fallback.realm_algorithms(realm)
        return tenant.digest_algorithms if tenant.active else ()

    def lookup_ha1(self, realm: str, username: str, algorithm: DigestAlgorithm) -> str | None:
        tenant = self._snapshot().tenant_for_realm(realm)
        if tenant is None:
            if self._fallback is None:
                return None
            return self._fallback.lookup_ha1(realm, username, algorithm)
        ext = tenant.extensions.get(username)
        if ext is None or not ext.enabled or not tenant.active:
            return None
        return ext.ha1.get(algorithm)
