"""Tenant-scoped repositories: the only way request handlers reach stored data.

A request opens a :class:`Store` for its :class:`Principal` (who is calling) and asks it
for a scope: ``store.platform()``, ``await store.operator(op_id)`` or
``await store.tenant(tenant_id)``. A scope exists only if the principal may see it (else
:class:`NotFoundError`, the same answer as for an id that does not exist), and every repository
a scope hands out filters by the scope's operator and tenant columns in each query it
builds. A handler has no way to write an unscoped query: the session is private to the
store and the repositories take no free-form filters on scope columns.

Writes record an audit entry (before/after views, secrets masked) and a :class:`Change`;
after :meth:`Store.commit` the changes go to the :class:`ChangeSink` (the snapshot
builder), so that the next call and the next REGISTER see them.

Limits hold under concurrent requests without locks: a tenant's ``extension_count`` and
``did_count`` move by one conditional ``UPDATE ... WHERE count < max`` in the same
transaction as the row they count, and a DID is assigned with ``UPDATE ... WHERE tenant_id
IS NULL``. Both stores run these atomically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.exc import StaleDataError

from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    LimitReachedError,
    NotFoundError,
)
from pbxcore.tenancy.readcache import ReadCache
from pbxcore.tenancy.secrets import SecretBox, hash_password, sip_ha1
from pbxcore.tenancy.views import view

__all__ = [
    "Change",
    "ChangeKind",
    "ChangeSink",
    "OperatorScope",
    "PlatformScope",
    "Principal",
    "Repo",
    "Role",
    "Store",
    "TenantScope",
    "call_stats",
    "stored_prompt",
]

Role = Literal["platform_admin", "operator_admin", "tenant_admin", "user"]
ChangeKind = Literal[
    "operator", "tenant", "extensions", "ivrs", "trunks", "routes", "dial_plans", "dids"
]
M = TypeVar("M", bound=m.Base)
T = TypeVar("T")
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a logged-in user (or, later, an API key)."""

    user_id: str
    login: str
    role: Role
    operator_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None

    @classmethod
    def system(cls, what: str = "system") -> Principal:
        """The platform itself (CLI, first start): platform rights, named in the audit log."""
        return cls(user_id="", login=what, role="platform_admin")


@dataclass(frozen=True, slots=True)
class Change:
    """What changed, for the snapshot builder: an operator's ``kind`` of objects."""

    operator_id: str
    kind: ChangeKind
    tenant_id: str | None = None
    # kind "routes": the route table, so only it is recompiled, and the prefixes changed in
    # it; kind "extensions": the extension numbers changed (keys None: reload all)
    ref: str | None = None
    keys: tuple[str, ...] | None = None


class ChangeSink(Protocol):
    """Who applies committed changes to the running server (the snapshot service)."""

    def changed(self, changes: Sequence[Change]) -> None:
        """Committed ``changes``: apply them soon."""
        ...

    async def applied(self) -> None:
        """Wait until what was reported so far is in effect (bounded)."""
        ...


_SECRET_FIELDS = frozenset({"password", "sip_password", "secret", "pin", "key"})


def _mask(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: ("***" if k in _SECRET_FIELDS else v) for k, v in data.items()}


def _written(value: str | None, field: str) -> tuple[str, ...]:
    """The write-only field a request set, for the audit entry's ``***``."""
    return () if value is None else (field,)


def _storable(ident: str) -> bool:
    """Whether an id from a path can be looked up: one with NUL is in no store (PostgreSQL
    refuses NUL in text), so it is not found, on both stores alike."""
    return "\x00" not in ident


def _duplicate_number(number: str) -> ConflictError:
    return ConflictError(
        f"extension {number} exists already", {"field": "number"}, code="duplicate"
    )


def _values_of(key: str, *views: dict[str, Any] | None) -> tuple[str, ...]:
    """The values of ``key`` in the before/after views of a change (a moved route or a
    renumbered extension touches both)."""
    return tuple(sorted({v[key] for v in views if v is not None and isinstance(v.get(key), str)}))


def _integrity(exc: IntegrityError, entity: str) -> ConflictError:
    """A unique or foreign-key violation as the API's 409, naming what collided."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig)
    if sqlstate == "23503" or "FOREIGN KEY" in text:
        return ConflictError(
            f"the {entity.replace('_', ' ')} is in use or refers to something that is gone",
            {"entity": entity},
            code="in_use",
        )
    return ConflictError(
        f"a {entity.replace('_', ' ')} with these values exists already",
        {"entity": entity},
        code="duplicate",
    )


_INSERTS: dict[Any, Any] = {}


def _insert(table: Any) -> Any:
    """A Core ``INSERT`` into ``table``, built once (its columns come with the values)."""
    query = _INSERTS.get(table)
    if query is None:
        query = _INSERTS[table] = insert(table)
    return query


def _insert_values(row: Any) -> dict[str, Any]:
    """Every column of a new ``row``: what was set on it, else the column's default (so
    that the row holds what the INSERT stores, as after a flush)."""
    given = row.__dict__
    values: dict[str, Any] = {}
    for prop in sa_inspect(type(row)).column_attrs:
        key = prop.key
        if key in given:
            values[key] = given[key]
            continue
        default = prop.columns[0].default
        if default is None:
            values[key] = None
        elif default.is_callable:
            values[key] = default.arg(None)
        elif default.is_scalar:
            values[key] = default.arg
        # else a SQL expression default: left to the database (none in the models today)
    return values


class Repo(Generic[M]):
    """CRUD over one table, always filtered by the scope's columns (``where``)."""

    def __init__(
        self,
        store: Store,
        model: type[M],
        entity: str,
        where: Mapping[str, Any],
        kind: ChangeKind | None,
    ) -> None:
        self._store = store
        self._model = model
        self.entity = entity
        self._where = dict(where)
        self._kind = kind

    def _scoped(self, *criteria: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        cols = [getattr(self._model, k) == v for k, v in self._where.items()]
        return [*cols, *criteria]

    def criteria(self, *criteria: ColumnElement[bool]) -> list[ColumnElement[bool]]:
        """The scope's filter with ``criteria`` (for a query of chosen columns)."""
        return self._scoped(*criteria)

    def select(self, *criteria: ColumnElement[bool]) -> Select[M]:
        return select(self._model).where(*self._scoped(*criteria))

    async def list(
        self,
        limit: int = 50,
        offset: int = 0,
        *criteria: ColumnElement[bool],
        order_by: Sequence[Any] = (),
    ) -> tuple[list[M], int]:
        """A page (``limit``, ``offset``) in a stable order, and the total count."""
        if not 0 <= limit <= MAX_PAGE or offset < 0:
            raise InvalidError("limit", f"limit must be 0..{MAX_PAGE} and offset >= 0")
        session = self._store.session
        order = list(order_by) or [self._model.created_at, self._model.id]  # type: ignore[attr-defined]
        # one row more than the page: a first page that holds everything needs no count
        query = self.select(*criteria).order_by(*order).limit(limit + 1).offset(offset)
        rows = list((await session.scalars(query)).all())
        if offset == 0 and len(rows) <= limit:
            total = len(rows)
        else:
            del rows[limit:]
            count = select(func.count()).select_from(self._model).where(*self._scoped(*criteria))
            total = int((await session.scalar(count)) or 0)
        return rows, total

    async def all(
        self, *criteria: ColumnElement[bool], order_by: Sequence[Any] = ()
    ) -> Sequence[M]:
        """Every row in scope, unpaged (to compile a route table, not for a response)."""
        order = list(order_by) or [self._model.created_at, self._model.id]  # type: ignore[attr-defined]
        query = self.select(*criteria).order_by(*order)
        return list((await self._store.session.scalars(query)).all())

    async def find(self, *criteria: ColumnElement[bool]) -> M | None:
        return (await self._store.session.scalars(self.select(*criteria).limit(1))).first()

    async def get(self, ident: str) -> M:
        row = None
        if _storable(ident):
            row = await self.find(self._model.id == ident)  # type: ignore[attr-defined]
        if row is None:
            raise NotFoundError(self.entity, ident)
        return row

    async def exists(self, ident: str | None) -> bool:
        if ident is None or not _storable(ident):
            return False
        return await self.find(self._model.id == ident) is not None  # type: ignore[attr-defined]

    async def require(self, field: str, ident: str | None) -> None:
        """A reference in a request body: 422 naming ``field`` unless it is in this scope."""
        if ident is not None and not await self.exists(ident):
            raise InvalidError(field, f"no {self.entity.replace('_', ' ')} with id {ident!r}")

    async def add(self, row: M, *, secrets: Sequence[str] = ()) -> M:
        """Insert ``row`` in the scope; ``secrets`` names the write-only fields the request
        set (``password`` ...), shown in the audit entry as ``***``."""
        for key, value in self._where.items():
            setattr(row, key, value)
        # one Core INSERT, not the unit of work's flush; the row then joins the session as
        # if loaded (later changes to it are flushed as UPDATEs)
        values = _insert_values(row)
        session = self._store.session
        table = self._model.__table__
        try:
            await session.execute(_insert(table), values)
        except IntegrityError as exc:
            raise _integrity(exc, self.entity) from exc
        for key, value in values.items():
            setattr(row, key, value)
        make_transient_to_detached(row)
        session.add(row)
        after = view(row) | dict.fromkeys(secrets, "***")
        self._store.record(
            "create", entity=self.entity, row=row, before=None, after=after, kind=self._kind
        )
        return row

    async def update(self, row: M, values: Mapping[str, Any], *, secrets: Sequence[str] = ()) -> M:
        before = view(row)
        for key, value in values.items():
            if key in self._where or key in ("id", "created_at"):
                raise InvalidError(key, "cannot be changed")
            setattr(row, key, value)
        if values:
            row.updated_at = m.utcnow()  # type: ignore[attr-defined]
            await self._flush(row.id)  # type: ignore[attr-defined]
            self._store.record(
                "update",
                entity=self.entity,
                row=row,
                before=before,
                after=view(row) | dict.fromkeys(secrets, "***"),
                kind=self._kind,
            )
        return row

    async def delete(self, row: M) -> None:
        """Delete ``row``; if a concurrent request deleted it first, it is not found (so
        what moves with it, a usage counter, moves once)."""
        before = view(row)
        session = self._store.session
        ident = row.id  # type: ignore[attr-defined]
        query = delete(self._model).where(*self._scoped(self._model.id == ident))  # type: ignore[attr-defined]
        try:
            result = await session.execute(query.execution_options(synchronize_session=False))
        except IntegrityError as exc:
            raise _integrity(exc, self.entity) from exc
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError(self.entity, ident)
        self._store.record(
            "delete", entity=self.entity, row=row, before=before, after=None, kind=self._kind
        )
        session.expunge(row)

    async def _flush(self, ident: str | None = None) -> None:
        try:
            await self._store.session.flush()
        except IntegrityError as exc:
            raise _integrity(exc, self.entity) from exc
        except StaleDataError as exc:  # a concurrent request deleted the row being changed
            raise NotFoundError(self.entity, ident) from exc


# built once: the statement every tenant-scoped request starts with
_TENANT_AND_OPERATOR = (
    select(m.Tenant, m.Operator)
    .join(m.Operator, m.Operator.id == m.Tenant.operator_id)
    .where(m.Tenant.id == bindparam("tenant_id"))
)


class Store:
    """A unit of work for one principal: scopes, repositories, audit, then commit."""

    def __init__(
        self,
        session: AsyncSession | Callable[[], AsyncSession],
        principal: Principal,
        *,
        secrets: SecretBox | None = None,
        sink: ChangeSink | None = None,
        reads: ReadCache | None = None,
        db: Database | None = None,
    ) -> None:
        # a session, or what opens one when first needed (a kept answer needs none)
        self._session = session if isinstance(session, AsyncSession) else None
        self._open = None if isinstance(session, AsyncSession) else session
        self.principal = principal
        self.secrets = secrets
        self._sink = sink
        self._changes: list[Change] = []
        self._audit: list[dict[str, Any]] = []
        self._reads = reads
        self._db = db

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            assert self._open is not None
            self._session = self._open()
        return self._session

    async def close(self) -> None:
        """Close the session this store opened itself (if it did)."""
        if self._open is not None and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- scopes -------------------------------------------------------------------------

    def platform(self) -> PlatformScope:
        if self.principal.role != "platform_admin":
            raise NotFoundError("resource")
        return PlatformScope(self)

    async def operator(self, operator_id: str) -> OperatorScope:
        p = self.principal
        allowed = p.role == "platform_admin" or (
            p.role == "operator_admin" and p.operator_id == operator_id
        )
        if allowed and _storable(operator_id):
            row = await self.session.get(m.Operator, operator_id)
            if row is not None:
                return OperatorScope(self, row)
        raise NotFoundError("operator", operator_id)

    async def tenant(self, tenant_id: str, *, write: bool = False) -> TenantScope:
        """The tenant if the principal may see it; ``write=True`` refuses the admin of a
        suspended tenant (403 ``tenant_suspended``), not its operator."""
        p = self.principal
        # the tenant and its operator in one query (both land in the identity map)
        found = None
        if _storable(tenant_id):
            found = (
                await self.session.execute(_TENANT_AND_OPERATOR, {"tenant_id": tenant_id})
            ).first()
        row, op = (None, None) if found is None else found
        visible = row is not None and (
            p.role == "platform_admin"
            or (p.role == "operator_admin" and row.operator_id == p.operator_id)
            or (p.role in ("tenant_admin", "user") and row.id == p.tenant_id)
        )
        if row is None or not visible:
            raise NotFoundError("tenant", tenant_id)
        if write and p.role == "user":
            # an extension's user changes its own settings through its own endpoints
            raise ForbiddenError("only the tenant's admins can change it")
        if write and p.role == "tenant_admin" and row.status == "suspended":
            raise ForbiddenError(
                "the tenant is suspended: its admins can read but not change it",
                code="tenant_suspended",
            )
        assert op is not None  # foreign key
        return TenantScope(self, op, row)

    async def read_through(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """``await load()``, or its answer kept from an earlier call with the same ``key``
        while the committed data is unchanged (:mod:`pbxcore.tenancy.readcache`). The key
        is qualified by the principal's scope (role, operator, tenant): ``load`` runs the
        scope checks, and a kept answer is given only to callers who would pass them."""
        if self._reads is None or self._db is None:
            return await load()
        p = self.principal
        full_key = (p.role, p.operator_id, p.tenant_id, key)
        version = await self._db.data_version()
        kept = self._reads.get(full_key, version)
        if kept is not None:
            return cast(T, kept)
        value = await load()
        self._reads.put(full_key, version, value)
        return value

    # -- audit and changes --------------------------------------------------------------

    def record(
        self,
        action: str,
        *,
        entity: str,
        row: Any,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        kind: ChangeKind | None,
    ) -> None:
        operator_id = row.id if isinstance(row, m.Operator) else getattr(row, "operator_id", None)
        tenant_id = row.id if isinstance(row, m.Tenant) else getattr(row, "tenant_id", None)
        # inserted by commit(), all of the transaction's entries in one statement
        self._audit.append(
            {
                "id": m.new_id("aud"),
                "at": m.utcnow(),
                "operator_id": operator_id,
                "tenant_id": tenant_id,
                "actor_id": self.principal.user_id or None,
                "actor": self.principal.login,
                "action": action,
                "entity": entity,
                "entity_id": row.id,
                "before": _mask(before),
                "after": _mask(after),
            }
        )
        if kind is not None and operator_id is not None:
            ref, keys = None, None
            if kind == "routes":
                ref = row.id if isinstance(row, m.RouteTableRow) else row.route_table_id
                if isinstance(row, m.Route):
                    keys = _values_of("prefix", before, after)
            elif kind == "extensions" and isinstance(row, m.Extension):
                ref, keys = row.id, _values_of("number", before, after)
            self._changes.append(Change(operator_id, kind, tenant_id, ref, keys))

    def touch(self, change: Change) -> None:
        """Report a change the repositories did not see (a bulk UPDATE ...)."""
        self._changes.append(change)

    async def flush_audit(self) -> None:
        """Insert the audit entries recorded so far (one statement); commit() does it too."""
        if self._audit:
            entries, self._audit = self._audit, []
            query = _insert(m.AuditEntry.__table__)
            await self.session.execute(query, entries[0] if len(entries) == 1 else entries)

    async def commit(self) -> None:
        try:
            await self.flush_audit()
            await self.session.commit()
        except IntegrityError as exc:
            raise _integrity(exc, "object") from exc
        changes, self._changes = self._changes, []
        if changes and self._sink is not None:
            self._sink.changed(changes)
            # a write is answered once it is in effect: the next REGISTER or call sees it
            await self._sink.applied()

    # -- users (shared by the three scopes that create admins) ---------------------------

    async def create_user(
        self,
        repo: Repo[m.User],
        *,
        role: Role,
        username: str,
        password: str,
        login: str,
        full_name: str = "",
        email: str | None = None,
        phone: str | None = None,
    ) -> m.User:
        row = m.User(
            id=m.new_id("usr"),
            role=role,
            login=login.lower(),
            username=username,
            password_hash=hash_password(password),
            full_name=full_name,
            email=email,
            phone=phone,
        )
        return await repo.add(row, secrets=("password",))

    async def update_user(self, repo: Repo[m.User], row: m.User, values: Mapping[str, Any]) -> bool:
        """Change a user; a new password ends all the user's sessions. True if it did."""
        data = dict(values)
        password = data.pop("password", None)
        if password is not None:
            data["password_hash"] = hash_password(password)
            await self.session.execute(delete(m.Session).where(m.Session.user_id == row.id))
        await repo.update(row, data, secrets=("password",) if password is not None else ())
        return password is not None

    async def find_login(self, login: str) -> m.User | None:
        """The user who logs in as ``login`` (authentication, before any scope exists)."""
        return (
            await self.session.scalars(select(m.User).where(m.User.login == login.lower()))
        ).first()


class PlatformScope:
    """What only a platform admin reaches: operators and their admins."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.operators: Repo[m.Operator] = Repo(store, m.Operator, "operator", {}, "operator")
        self.platform_admins: Repo[m.User] = Repo(
            store, m.User, "user", {"role": "platform_admin", "operator_id": None}, None
        )

    async def create_operator(
        self, *, name: str, domain: str, branding: Mapping[str, Any]
    ) -> m.Operator:
        if await self.operators.find(m.Operator.domain == domain) is not None:
            raise ConflictError(f"an operator with domain {domain!r} exists", code="duplicate")
        row = m.Operator(id=m.new_id("op"), name=name, domain=domain, branding=dict(branding))
        return await self.operators.add(row)

    async def update_operator(self, row: m.Operator, values: Mapping[str, Any]) -> m.Operator:
        if "domain" in values and values["domain"] != row.domain:
            tenants = await self.store.session.scalar(
                select(func.count()).select_from(m.Tenant).where(m.Tenant.operator_id == row.id)
            )
            if tenants:
                # the tenants' domains (and with them their SIP realms and HA1s) hang on it
                raise ConflictError(
                    "the domain of an operator with tenants cannot change: their SIP "
                    "credentials are bound to it",
                    code="in_use",
                )
        return await self.operators.update(row, values)

    async def delete_operator(self, row: m.Operator) -> None:
        tenants = await self.store.session.scalar(
            select(func.count()).select_from(m.Tenant).where(m.Tenant.operator_id == row.id)
        )
        if tenants:
            raise ConflictError("the operator still has tenants; delete them first", code="in_use")
        await self.store.session.execute(delete(m.User).where(m.User.operator_id == row.id))
        await self.operators.delete(row)

    def operator_admins(self, operator: m.Operator) -> Repo[m.User]:
        return Repo(
            self.store,
            m.User,
            "operator_admin",
            {"operator_id": operator.id, "tenant_id": None, "role": "operator_admin"},
            None,
        )


class OperatorScope:
    """One operator's objects: tenants, trunks, route tables, dial plans, the DID pool."""

    def __init__(self, store: Store, operator: m.Operator) -> None:
        self.store = store
        self.operator = operator
        op = {"operator_id": operator.id}
        self.tenants: Repo[m.Tenant] = Repo(store, m.Tenant, "tenant", op, "tenant")
        self.trunks: Repo[m.Trunk] = Repo(store, m.Trunk, "trunk", op, "trunks")
        self.route_tables: Repo[m.RouteTableRow] = Repo(
            store, m.RouteTableRow, "route_table", op, "routes"
        )
        self.dial_plans: Repo[m.DialPlanRow] = Repo(
            store, m.DialPlanRow, "dial_plan", op, "dial_plans"
        )
        self.numbers: Repo[m.Did] = Repo(store, m.Did, "number", op, "dids")
        self.audit: Repo[m.AuditEntry] = Repo(store, m.AuditEntry, "audit_entry", op, None)
        # written by the platform (pbx.events), read here: never through add/update
        self.events: Repo[m.PlatformEvent] = Repo(store, m.PlatformEvent, "event", op, None)

    def routes(self, table: m.RouteTableRow) -> Repo[m.Route]:
        return Repo(
            self.store,
            m.Route,
            "route",
            {"operator_id": self.operator.id, "route_table_id": table.id},
            "routes",
        )

    async def tenant(self, tenant_id: str) -> TenantScope:
        row = await self.tenants.get(tenant_id)
        return TenantScope(self.store, self.operator, row)

    def tenant_domain(self, slug: str) -> str:
        return f"{slug}.{self.operator.domain}"

    async def check_references(self, values: Mapping[str, Any]) -> None:
        """The ids a tenant (or extension) body names must be this operator's."""
        await self.route_tables.require("route_table_id", values.get("route_table_id"))
        await self.trunks.require("dedicated_trunk_id", values.get("dedicated_trunk_id"))
        await self.dial_plans.require("dial_plan_id", values.get("dial_plan_id"))

    async def create_tenant(self, values: Mapping[str, Any]) -> m.Tenant:
        await self.check_references(values)
        data = dict(values)
        slug = data["slug"]
        data["domain"] = self.tenant_domain(slug)
        clash = await self.store.session.scalar(
            select(func.count()).select_from(m.Tenant).where(m.Tenant.domain == data["domain"])
        )
        if clash:
            raise ConflictError(
                f"a tenant {slug!r} exists already", {"field": "slug"}, code="duplicate"
            )
        row = m.Tenant(id=m.new_id("ten"), **data)
        return await self.tenants.add(row)

    async def update_tenant(self, row: m.Tenant, values: Mapping[str, Any]) -> m.Tenant:
        if "slug" in values and values["slug"] != row.slug:
            # the domain is the SIP realm of every extension's HA1: it cannot move
            raise InvalidError(
                "slug", "cannot change: the extensions' SIP credentials are bound to it"
            )
        await self.check_references(values)
        # a lowered limit deletes nothing: it stops further creates
        return await self.tenants.update(row, values)

    async def delete_tenant(self, row: m.Tenant) -> None:
        # the tenant's DIDs go back to the pool (the foreign key sets them free)
        await self.store.session.execute(
            update(m.Did).where(m.Did.tenant_id == row.id).values(tenant_id=None, destination=None)
        )
        await self.tenants.delete(row)
        self.store.touch(Change(row.operator_id, "dids", row.id))

    # -- trunks, route tables, dial plans (the routing configuration) ---------------------

    async def _unique_name(self, repo: Repo[Any], column: Any, name: str, row: Any | None) -> None:
        # a 409 naming the field, before the unique constraint would say it less precisely
        clash = await repo.find(column == name)
        if clash is not None and clash is not row:
            raise ConflictError(
                f"a {repo.entity.replace('_', ' ')} named {name!r} exists already",
                {"field": "name"},
                code="duplicate",
            )

    def _trunk_columns(self, values: Mapping[str, Any], row: m.Trunk | None) -> dict[str, Any]:
        """The API's trunk fields as columns: ``auth`` to a username and an encrypted
        password (a PATCH without a password keeps the stored one)."""
        data = dict(values)
        if "auth" in data:
            auth = data.pop("auth")
            if auth is None:
                data["auth_username"] = None
                data["auth_password"] = None
            else:
                data["auth_username"] = auth["username"]
                password = auth.get("password")
                if password is not None:
                    if self.store.secrets is None:
                        raise RuntimeError("no SecretBox: trunk passwords cannot be stored")
                    data["auth_password"] = self.store.secrets.encrypt(password)
                elif row is None or row.auth_password is None:
                    raise InvalidError("auth.password", "required with a username")
        register = data.get("register", row.register if row is not None else False)
        username = data.get("auth_username", row.auth_username if row is not None else None)
        if register and username is None:
            raise InvalidError("register", "registering to the carrier needs auth")
        return data

    async def create_trunk(self, values: Mapping[str, Any]) -> m.Trunk:
        """A trunk from the API's fields (``auth`` ``{username, password}`` or None)."""
        await self._unique_name(self.trunks, m.Trunk.name, values["name"], None)
        row = m.Trunk(id=m.new_id("trk"), **self._trunk_columns(values, None))
        return await self.trunks.add(row)

    async def update_trunk(self, row: m.Trunk, values: Mapping[str, Any]) -> m.Trunk:
        if "name" in values:
            await self._unique_name(self.trunks, m.Trunk.name, values["name"], row)
        return await self.trunks.update(row, self._trunk_columns(values, row))

    async def delete_trunk(self, row: m.Trunk) -> None:
        """Delete a trunk no route and no tenant uses (409 ``in_use`` otherwise)."""
        routes = await self.store.session.scalar(
            select(func.count())
            .select_from(m.Route)
            .where(m.Route.operator_id == self.operator.id, m.Route.trunk_id == row.id)
        )
        tenant = await self.tenants.find(m.Tenant.dedicated_trunk_id == row.id)
        if routes or tenant is not None:
            raise ConflictError(
                "the trunk is in use: "
                + ", ".join(
                    ([f"{routes} route(s)"] if routes else [])
                    + ([f"tenant {tenant.slug!r} as its dedicated trunk"] if tenant else [])
                ),
                {"entity": "trunk", "routes": int(routes or 0), "tenant_id": tenant and tenant.id},
                code="in_use",
            )
        await self.trunks.delete(row)

    async def create_route_table(self, values: Mapping[str, Any]) -> m.RouteTableRow:
        await self._unique_name(self.route_tables, m.RouteTableRow.name, values["name"], None)
        return await self.route_tables.add(m.RouteTableRow(id=m.new_id("rt"), **values))

    async def update_route_table(
        self, row: m.RouteTableRow, values: Mapping[str, Any]
    ) -> m.RouteTableRow:
        if "name" in values:
            await self._unique_name(self.route_tables, m.RouteTableRow.name, values["name"], row)
        return await self.route_tables.update(row, values)

    async def delete_route_table(self, row: m.RouteTableRow) -> None:
        """Delete a route table (its routes with it) that no tenant uses."""
        tenant = await self.tenants.find(m.Tenant.route_table_id == row.id)
        if tenant is not None:
            raise ConflictError(
                f"the route table is in use by tenant {tenant.slug!r}",
                {"entity": "route_table", "tenant_id": tenant.id},
                code="in_use",
            )
        await self.route_tables.delete(row)

    async def create_route(self, table: m.RouteTableRow, values: Mapping[str, Any]) -> m.Route:
        await self.trunks.require("trunk_id", values.get("trunk_id"))
        return await self.routes(table).add(m.Route(id=m.new_id("rte"), **values))

    async def update_route(
        self, table: m.RouteTableRow, row: m.Route, values: Mapping[str, Any]
    ) -> m.Route:
        await self.trunks.require("trunk_id", values.get("trunk_id"))
        return await self.routes(table).update(row, values)

    async def route_table_rows(self, table: m.RouteTableRow) -> Sequence[m.Route]:
        """Every route of ``table`` (to compile it; a table may hold more than a page)."""
        return await self.routes(table).all(order_by=(m.Route.prefix, m.Route.created_at))

    def _check_dial_plan(self, values: Mapping[str, Any], row: m.DialPlanRow | None) -> None:
        def current(key: str, default: Any) -> Any:
            return values[key] if key in values else getattr(row, key, default)

        try:
            rules.check_dial_plan(
                country=current("country", "RU"),
                rules=current("rules", []),
                default_area_code=current("default_area_code", None),
                extension_digits=current("extension_digits", None),
            )
        except rules.FieldValueError as exc:
            raise InvalidError(exc.field, str(exc)) from None

    async def create_dial_plan(self, values: Mapping[str, Any]) -> m.DialPlanRow:
        await self._unique_name(self.dial_plans, m.DialPlanRow.name, values["name"], None)
        self._check_dial_plan(values, None)
        return await self.dial_plans.add(m.DialPlanRow(id=m.new_id("dp"), **values))

    async def update_dial_plan(
        self, row: m.DialPlanRow, values: Mapping[str, Any]
    ) -> m.DialPlanRow:
        if "name" in values:
            await self._unique_name(self.dial_plans, m.DialPlanRow.name, values["name"], row)
        self._check_dial_plan(values, row)
        return await self.dial_plans.update(row, values)

    async def delete_dial_plan(self, row: m.DialPlanRow) -> None:
        """Delete a dial plan that no tenant and no extension uses."""
        tenant = await self.tenants.find(m.Tenant.dial_plan_id == row.id)
        extensions = await self.store.session.scalar(
            select(func.count())
            .select_from(m.Extension)
            .where(m.Extension.operator_id == self.operator.id, m.Extension.dial_plan_id == row.id)
        )
        if tenant is not None or extensions:
            raise ConflictError(
                "the dial plan is in use"
                + (f" by tenant {tenant.slug!r}" if tenant is not None else "")
                + (f" by {extensions} extension(s)" if extensions else ""),
                {
                    "entity": "dial_plan",
                    "tenant_id": tenant and tenant.id,
                    "extensions": int(extensions or 0),
                },
                code="in_use",
            )
        await self.dial_plans.delete(row)

    # -- the DID pool ----------------------------------------------------------------------

    async def _taken(self, first: str, last: str) -> list[str]:
        # numbers are unique on the platform, so another operator's count too (not shown)
        d = m.Did
        query = (
            select(d.number)
            .where(d.number >= first, d.number <= last, func.length(d.number) == len(first))
            .order_by(d.number)
        )
        return list((await self.store.session.scalars(query)).all())

    async def add_number(self, number: str) -> m.Did:
        """Add one E.164 number to the pool, free."""
        if await self._taken(number, number):
            raise ConflictError(
                f"{number} is in a number pool already", {"field": "number"}, code="duplicate"
            )
        return await self.numbers.add(m.Did(id=m.new_id("did"), number=number, tenant_id=None))

    async def add_number_range(self, first: str, last: str) -> int:
        """Add ``first`` .. ``last`` to the pool, all or none (none if one is taken)."""
        try:
            numbers = rules.check_number_range(first, last)
        except rules.FieldValueError as exc:
            raise InvalidError(exc.field, str(exc)) from None
        taken = await self._taken(first, last)
        if taken:
            shown = ", ".join(taken[:5]) + (", ..." if len(taken) > 5 else "")
            raise ConflictError(
                f"{len(taken)} number(s) of {first}..{last} are in a number pool already: "
                f"{shown}; nothing was added",
                {
                    "field": "from",
                    "fields": ["from", "to"],
                    "taken": len(taken),
                    "first_taken": taken[0],
                    "last_taken": taken[-1],
                },
                code="overlap",
            )
        now = m.utcnow()
        op = self.operator.id
        rows = [
            {
                "id": m.new_id("did"),
                "operator_id": op,
                "number": n,
                "tenant_id": None,
                "destination": None,
                "created_at": now,
                "updated_at": now,
            }
            for n in numbers
        ]
        try:
            await self.store.session.execute(insert(m.Did), rows)
        except IntegrityError as exc:  # a concurrent range took some of them
            raise _integrity(exc, "number") from exc
        # one audit entry for the range, not one per number
        self.store.record(
            "create",
            entity="number_range",
            row=_RangeRef(f"{first}-{last}", op),
            before=None,
            after={"from": first, "to": last, "count": len(numbers)},
            kind="dids",
        )
        return len(numbers)

    async def set_number_tenant(self, did: m.Did, tenant_id: str | None) -> m.Did:
        """Assign a pool DID to one of this operator's tenants, or (None) release it."""
        if tenant_id is None:
            if did.tenant_id is None:
                return did
            return await (await self.tenant(did.tenant_id)).release_number(did)
        await self.tenants.require("tenant_id", tenant_id)
        if did.tenant_id == tenant_id:
            return did
        if did.tenant_id is not None:
            raise ConflictError(
                f"{did.number} is assigned to another tenant; release it first (tenant_id null)",
                {"field": "tenant_id"},
                code="number_assigned",
            )
        return await (await self.tenant(tenant_id)).assign_number(did)

    async def delete_number(self, did: m.Did) -> None:
        """Remove a free DID from the pool (an assigned one is released first)."""
        if did.tenant_id is not None:
            raise ConflictError(
                f"{did.number} is assigned to a tenant; release it first",
                {"entity": "number", "tenant_id": did.tenant_id},
                code="in_use",
            )
        await self.numbers.delete(did)


_COUNTER_UPDATES: dict[tuple[str, str, bool], Any] = {}


def _counter_update(column: str, limit: str, up: bool) -> Any:
    """``UPDATE tenants SET column = column + :delta WHERE id = :tenant_id`` (and, going
    up, ``AND column + :delta <= limit``), built once per counter (Core: the tenant object
    in the session is not touched)."""
    key = (column, limit, up)
    query = _COUNTER_UPDATES.get(key)
    if query is None:
        t = cast(Table, m.Tenant.__table__)
        counter = t.c[column]
        query = (
            update(t)
            .where(t.c.id == bindparam("tenant_id"))
            .values({column: counter + bindparam("delta")})
        )
        if up:
            query = query.where(counter + bindparam("delta") <= t.c[limit])
        _COUNTER_UPDATES[key] = query
    return query


@contextlib.contextmanager
def _named(entity: str, name: object) -> Iterator[None]:
    """A duplicate inside is a 409 naming the ``name`` field that is taken."""
    try:
        yield
    except ConflictError as exc:
        if exc.code != "duplicate":
            raise
        raise ConflictError(
            f"{entity} named {name!r} exists already", {"field": "name"}, code="duplicate"
        ) from exc


async def stored_prompt(db: Database, tenant_id: str, prompt_id: str) -> bytes | None:
    """A tenant's prompt (μ-law) for the call path, which has no principal: scoped by the
    tenant the call is in. None when the tenant has no such prompt."""
    p = m.Prompt
    async with db.session() as session:
        audio = await session.scalar(
            select(p.audio).where(p.id == prompt_id, p.tenant_id == tenant_id)
        )
    return None if audio is None else bytes(audio)


def _sends_to(ivr: m.Ivr, kind: str, ident: str) -> bool:
    """Whether one of ``ivr``'s destinations is the object ``kind``/``ident``."""
    targets = [*(ivr.options or {}).values(), ivr.default_destination or {}]
    return any(t.get("type") == kind and t.get("id") == ident for t in targets)


class TenantScope:
    """One tenant's objects: extensions, its DIDs, CDRs, its admins, its audit log."""

    def __init__(self, store: Store, operator: m.Operator, tenant: m.Tenant) -> None:
        self.store = store
        self.operator = operator
        self.tenant = tenant
        scope = {"operator_id": operator.id, "tenant_id": tenant.id}
        self.extensions: Repo[m.Extension] = Repo(
            store, m.Extension, "extension", scope, "extensions"
        )
        self.numbers: Repo[m.Did] = Repo(store, m.Did, "number", scope, "dids")
        self.calls: Repo[m.Cdr] = Repo(store, m.Cdr, "call", scope, None)
        self.audit: Repo[m.AuditEntry] = Repo(store, m.AuditEntry, "audit_entry", scope, None)
        self.admins: Repo[m.User] = Repo(
            store, m.User, "tenant_admin", scope | {"role": "tenant_admin"}, None
        )
        self.prompts: Repo[m.Prompt] = Repo(store, m.Prompt, "prompt", scope, None)
        self.ivrs: Repo[m.Ivr] = Repo(store, m.Ivr, "ivr", scope, "ivrs")
        self.schedules: Repo[m.Schedule] = Repo(store, m.Schedule, "schedule", scope, "ivrs")

    @property
    def operator_scope(self) -> OperatorScope:
        return OperatorScope(self.store, self.operator)

    def require_operator(self) -> None:
        """Operator-scope actions on a tenant (creating its admins ...): 403 for its own admins."""
        if self.store.principal.role not in ("platform_admin", "operator_admin"):
            raise ForbiddenError("only the tenant's operator can do this")

    def require_admin(self) -> None:
        """Reading the tenant's records (audit log, CDRs): its admins and operator, not users."""
        if self.store.principal.role == "user":
            raise ForbiddenError("only the tenant's admins can read this")

    def login_of(self, username: str) -> str:
        return f"{username}@{self.tenant.domain}"

    async def _count(self, column: str, limit: str, delta: int) -> None:
        """Move a usage counter by ``delta``; +1 only while under the tenant's limit."""
        query = _counter_update(column, limit, delta > 0)
        result = await self.store.session.execute(
            query, {"tenant_id": self.tenant.id, "delta": delta}
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LimitReachedError(limit, getattr(self.tenant, limit))

    async def create_extension(
        self, values: Mapping[str, Any], sip_password: str | None
    ) -> m.Extension:
        await self.operator_scope.dial_plans.require("dial_plan_id", values.get("dial_plan_id"))
        data = dict(values)
        row = m.Extension(id=m.new_id("ext"), **data)
        if sip_password is not None:
            self._set_sip_password(row, sip_password)
        # a taken number is found by the unique constraint (one statement less per create)
        try:
            await self.extensions.add(row, secrets=_written(sip_password, "sip_password"))
        except ConflictError as exc:  # the number is taken (perhaps by a concurrent create)
            if exc.code == "duplicate":
                raise _duplicate_number(data["number"]) from exc
            raise
        # the counter last, just before the commit: its UPDATE locks the tenant's row until
        # then, and every create in the tenant waits for that lock (over the limit: the
        # transaction, with the row, is rolled back)
        await self.store.flush_audit()
        await self._count("extension_count", "max_extensions", +1)
        return row

    def _set_sip_password(self, row: m.Extension, password: str) -> None:
        ha1 = sip_ha1(row.number, self.tenant.domain, password)
        row.ha1_md5 = ha1[DigestAlgorithm.MD5]
        row.ha1_sha256 = ha1[DigestAlgorithm.SHA256]

    async def update_extension(
        self, row: m.Extension, values: Mapping[str, Any], sip_password: str | None
    ) -> m.Extension:
        await self.operator_scope.dial_plans.require("dial_plan_id", values.get("dial_plan_id"))
        if "number" in values and values["number"] != row.number and sip_password is None:
            raise InvalidError(
                "sip_password", "a new number needs a new SIP password (HA1 includes the username)"
            )
        data = dict(values)
        if sip_password is not None:
            ha1 = sip_ha1(data.get("number", row.number), self.tenant.domain, sip_password)
            data["ha1_md5"] = ha1[DigestAlgorithm.MD5]
            data["ha1_sha256"] = ha1[DigestAlgorithm.SHA256]
        try:
            return await self.extensions.update(
                row, data, secrets=_written(sip_password, "sip_password")
            )
        except ConflictError as exc:
            if exc.code == "duplicate" and "number" in data:
                raise _duplicate_number(data["number"]) from exc
            raise

    async def create_prompt(self, name: str, wav: bytes) -> m.Prompt:
        """A prompt from an uploaded WAV, stored as μ-law (at most ``MAX_PROMPTS``)."""
        try:
            audio, duration_ms = rules.prompt_audio(wav)
        except ValueError as exc:
            raise InvalidError("file", str(exc)) from None
        p = m.Prompt
        count = await self.store.session.scalar(
            select(func.count()).select_from(p).where(p.tenant_id == self.tenant.id)
        )
        if (count or 0) >= rules.MAX_PROMPTS:
            raise LimitReachedError("max_prompts", rules.MAX_PROMPTS)
        row = p(id=m.new_id("prm"), name=name, duration_ms=duration_ms, audio=audio)
        with _named("a prompt", name):
            return await self.prompts.add(row)

    async def prompt_audio(self, row: m.Prompt) -> bytes:
        """The stored μ-law samples of one of this tenant's prompts."""
        p = m.Prompt
        audio = await self.store.session.scalar(
            select(p.audio).where(p.id == row.id, p.tenant_id == self.tenant.id)
        )
        if audio is None:
            raise NotFoundError("prompt", row.id)
        return bytes(audio)

    async def delete_extension(self, row: m.Extension) -> None:
        """Delete an extension; 409 while an IVR sends calls to it (or to its voicemail)."""
        menus = [
            i.name
            for i in await self.ivrs.all()
            if _sends_to(i, "extension", row.id) or _sends_to(i, "voicemail", row.id)
        ]
        if menus:
            raise ConflictError(
                f"extension {row.number} is a destination of the IVR {', '.join(sorted(menus))}",
                {"used_by": menus},
                code="in_use",
            )
        await self.extensions.delete(row)
        await self._count("extension_count", "max_extensions", -1)

    async def assign_number(self, did: m.Did) -> m.Did:
        """Give a free pool DID to this tenant (its ``max_dids`` holds)."""
        if did.operator_id != self.operator.id:
            raise NotFoundError("number", did.id)
        before = view(did)
        await self._count("did_count", "max_dids", +1)
        result = await self.store.session.execute(
            update(m.Did)
            .where(m.Did.id == did.id, m.Did.tenant_id.is_(None))
            .values(tenant_id=self.tenant.id, destination=None, updated_at=m.utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(
                f"{did.number} is assigned to a tenant already", code="number_assigned"
            )
        await self.store.session.refresh(did)
        self.store.record(
            "update", entity="number", row=did, before=before, after=view(did), kind="dids"
        )
        return did

    async def release_number(self, did: m.Did) -> m.Did:
        """Return one of this tenant's DIDs to the operator's pool."""
        before = view(did)
        result = await self.store.session.execute(
            update(m.Did)
            .where(m.Did.id == did.id, m.Did.tenant_id == self.tenant.id)
            .values(tenant_id=None, destination=None, updated_at=m.utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError("number", did.id)
        await self._count("did_count", "max_dids", -1)
        await self.store.session.refresh(did)
        self.store.record(
            "update", entity="number", row=did, before=before, after=view(did), kind="dids"
        )
        self.store.touch(Change(self.operator.id, "dids", self.tenant.id))
        return did

    def require_feature(self, feature: str) -> None:
        """403 ``feature_disabled`` unless the operator sold this tenant ``feature``."""
        if feature not in (self.tenant.features or []):
            raise ForbiddenError(
                f"the client PBX {self.tenant.slug} has no {feature} feature "
                "(its operator enables it in the tenant's features)",
                code="feature_disabled",
            )

    async def check_destination(self, field: str, destination: Mapping[str, Any]) -> None:
        """The object a destination names must be this tenant's (422 naming ``field``), and
        the tenant must have the feature it needs (403).

        Extensions (and their voicemail boxes), IVRs and schedules are checked; ring groups
        once they are stored."""
        kind = destination["type"]
        if kind == "schedule":
            self.require_feature("schedules")
            if not await self.schedules.exists(destination["id"]):
                raise InvalidError(
                    field, f"no schedule with id {destination['id']!r} in this tenant"
                )
        if kind == "ivr":
            self.require_feature("ivr")
            if not await self.ivrs.exists(destination["id"]):
                raise InvalidError(field, f"no IVR with id {destination['id']!r} in this tenant")
        if kind in ("extension", "voicemail") and not await self.extensions.exists(
            destination["id"]
        ):
            raise InvalidError(field, f"no extension with id {destination['id']!r} in this tenant")

    async def _ivr_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """An IVR's fields checked against the tenant: its prompts and destinations."""
        data = dict(values)
        for field in ("greeting_prompt_id", "invalid_prompt_id"):
            await self.prompts.require(field, data.get(field))
        for digit, destination in (data.get("options") or {}).items():
            await self.check_destination(f"options.{digit}", destination)
        if data.get("default_destination") is not None:
            await self.check_destination("default_destination", data["default_destination"])
        return data

    async def create_ivr(self, values: Mapping[str, Any]) -> m.Ivr:
        self.require_feature("ivr")
        data = await self._ivr_values(values)
        with _named("an IVR", data.get("name")):
            return await self.ivrs.add(m.Ivr(id=m.new_id("ivr"), **data))

    async def update_ivr(self, row: m.Ivr, values: Mapping[str, Any]) -> m.Ivr:
        self.require_feature("ivr")
        return await self.ivrs.update(row, await self._ivr_values(values))

    async def _schedule_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(values)
        for field in ("open_destination", "closed_destination"):
            if data.get(field) is not None:
                await self.check_destination(field, data[field])
        return data

    async def create_schedule(self, values: Mapping[str, Any]) -> m.Schedule:
        self.require_feature("schedules")
        data = await self._schedule_values(values)
        data.setdefault("time_zone", self.tenant.time_zone)
        with _named("a schedule", data.get("name")):
            return await self.schedules.add(m.Schedule(id=m.new_id("sch"), **data))

    async def update_schedule(self, row: m.Schedule, values: Mapping[str, Any]) -> m.Schedule:
        self.require_feature("schedules")
        return await self.schedules.update(row, await self._schedule_values(values))

    async def delete_schedule(self, row: m.Schedule) -> None:
        """Delete a schedule; 409 while a DID, an IVR or another schedule sends calls to it."""
        await self._not_in_use("schedule", row.id, f"the schedule {row.name}")
        await self.schedules.delete(row)

    async def _not_in_use(self, kind: str, ident: str, name: str) -> None:
        """409 ``in_use`` naming the DIDs, menus and schedules that send calls to it."""
        uses = [
            d.number
            for d in await self.numbers.all()
            if (d.destination or {}).get("type") == kind
            and (d.destination or {}).get("id") == ident
        ]
        uses += [
            i.name for i in await self.ivrs.all() if i.id != ident and _sends_to(i, kind, ident)
        ]
        uses += [
            s.name
            for s in await self.schedules.all()
            if s.id != ident
            and any(
                (d or {}).get("type") == kind and (d or {}).get("id") == ident
                for d in (s.open_destination, s.closed_destination)
            )
        ]
        if uses:
            raise ConflictError(
                f"{name} is in use by {', '.join(sorted(uses))}", {"used_by": uses}, code="in_use"
            )

    async def delete_ivr(self, row: m.Ivr) -> None:
        """Delete an IVR; 409 while a DID, another IVR or a schedule sends calls to it."""
        await self._not_in_use("ivr", row.id, f"the IVR {row.name}")
        await self.ivrs.delete(row)

    async def set_number_destination(
        self, did: m.Did, destination: Mapping[str, Any] | None
    ) -> m.Did:
        """Where calls to one of this tenant's DIDs go (None: nowhere yet)."""
        if destination is not None:
            await self.check_destination("destination", destination)
        value = None if destination is None else dict(destination)
        return await self.numbers.update(did, {"destination": value})


@dataclass(frozen=True, slots=True)
class _RangeRef:
    """What the audit log names for a bulk change (a range of DIDs)."""

    id: str
    operator_id: str


MAX_STATS_DAYS = 366


async def call_stats(scope: TenantScope, since: datetime, until: datetime) -> dict[str, Any]:
    """Per-extension and per-day (in the tenant's time zone) aggregates of its CDRs started
    in ``[since, until)``: calls, answered, missed (no answer or busy), talk time. Calls
    still in progress are not counted until they end."""
    if until <= since:
        raise InvalidError("to", "must be after from")
    if until - since > timedelta(days=MAX_STATS_DAYS):
        raise InvalidError("to", f"a range of at most {MAX_STATS_DAYS} days")
    zone = ZoneInfo(scope.tenant.time_zone)
    c = m.Cdr
    query = select(c.extension, c.started_at, c.disposition, c.billsec, c.direction).where(
        *scope.calls.criteria(
            c.started_at >= since, c.started_at < until, c.disposition != "in_progress"
        )
    )

    def bucket() -> dict[str, int]:
        return {"calls": 0, "answered": 0, "missed": 0, "billsec": 0}

    by_extension: dict[str, dict[str, int]] = {}
    by_day: dict[str, dict[str, int]] = {}
    total = bucket()
    for row in await scope.store.session.execute(query):
        day = row.started_at.astimezone(zone).date().isoformat()
        targets = [total, by_day.setdefault(day, bucket())]
        if row.extension:
            targets.append(by_extension.setdefault(row.extension, bucket()))
        for target in targets:
            target["calls"] += 1
            target["billsec"] += row.billsec
            if row.disposition == "answered":
                target["answered"] += 1
            elif row.disposition in ("no_answer", "busy"):
                target["missed"] += 1
    return {
        "from": since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "to": until.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "time_zone": scope.tenant.time_zone,
        "total": total,
        "extensions": [{"extension": k} | v for k, v in sorted(by_extension.items())],
        "days": [{"date": k} | v for k, v in sorted(by_day.items())],
    }
