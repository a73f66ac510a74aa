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

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast

from sqlalchemy import ColumnElement, Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.tenancy import models as m
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
]

Role = Literal["platform_admin", "operator_admin", "tenant_admin", "user"]
ChangeKind = Literal["operator", "tenant", "extensions", "trunks", "routes", "dial_plans", "dids"]
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
    # kind "routes": the route table, so only it is recompiled; kind "extensions": the
    # extension, so only it is reloaded
    ref: str | None = None


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

    async def find(self, *criteria: ColumnElement[bool]) -> M | None:
        return (await self._store.session.scalars(self.select(*criteria).limit(1))).first()

    async def get(self, ident: str) -> M:
        row = await self.find(self._model.id == ident)  # type: ignore[attr-defined]
        if row is None:
            raise NotFoundError(self.entity, ident)
        return row

    async def exists(self, ident: str | None) -> bool:
        return ident is not None and await self.find(self._model.id == ident) is not None  # type: ignore[attr-defined]

    async def require(self, field: str, ident: str | None) -> None:
        """A reference in a request body: 422 naming ``field`` unless it is in this scope."""
        if ident is not None and not await self.exists(ident):
            raise InvalidError(field, f"no {self.entity.replace('_', ' ')} with id {ident!r}")

    async def add(self, row: M, *, secrets: Sequence[str] = ()) -> M:
        """Insert ``row`` in the scope; ``secrets`` names the write-only fields the request
        set (``password`` ...), shown in the audit entry as ``***``."""
        for key, value in self._where.items():
            setattr(row, key, value)
        self._store.session.add(row)
        await self._flush()
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
            await self._flush()
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
        before = view(row)
        await self._store.session.delete(row)
        await self._flush()
        self._store.record(
            "delete", entity=self.entity, row=row, before=before, after=None, kind=self._kind
        )

    async def _flush(self) -> None:
        try:
            await self._store.session.flush()
        except IntegrityError as exc:
            raise _integrity(exc, self.entity) from exc


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
        session: AsyncSession,
        principal: Principal,
        *,
        secrets: SecretBox | None = None,
        sink: ChangeSink | None = None,
        reads: ReadCache | None = None,
        db: Database | None = None,
    ) -> None:
        self.session = session
        self.principal = principal
        self.secrets = secrets
        self._sink = sink
        self._changes: list[Change] = []
        self._reads = reads
        self._db = db

    # -- scopes -------------------------------------------------------------------------

    def platform(self) -> PlatformScope:
        if self.principal.role != "platform_admin":
            raise NotFoundError("resource")
        return PlatformScope(self)

    async def operator(self, operator_id: str) -> OperatorScope:
        p = self.principal
        if p.role == "platform_admin" or (
            p.role == "operator_admin" and p.operator_id == operator_id
        ):
            row = await self.session.get(m.Operator, operator_id)
            if row is not None:
                return OperatorScope(self, row)
        raise NotFoundError("operator", operator_id)

    async def tenant(self, tenant_id: str, *, write: bool = False) -> TenantScope:
        """The tenant if the principal may see it; ``write=True`` refuses the admin of a
        suspended tenant (403 ``tenant_suspended``), not its operator."""
        p = self.principal
        # the tenant and its operator in one query (both land in the identity map)
        found = (await self.session.execute(_TENANT_AND_OPERATOR, {"tenant_id": tenant_id})).first()
        row, op = (None, None) if found is None else found
        visible = row is not None and (
            p.role == "platform_admin"
            or (p.role == "operator_admin" and row.operator_id == p.operator_id)
            or (p.role in ("tenant_admin", "user") and row.id == p.tenant_id)
        )
        if row is None or not visible:
            raise NotFoundError("tenant", tenant_id)
        if write and p.role in ("tenant_admin", "user") and row.status == "suspended":
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
        self.session.add(
            m.AuditEntry(
                id=m.new_id("aud"),
                at=m.utcnow(),
                operator_id=operator_id,
                tenant_id=tenant_id,
                actor_id=self.principal.user_id or None,
                actor=self.principal.login,
                action=action,
                entity=entity,
                entity_id=row.id,
                before=_mask(before),
                after=_mask(after),
            )
        )
        if kind is not None and operator_id is not None:
            ref = None
            if kind == "routes":
                ref = row.id if isinstance(row, m.RouteTableRow) else row.route_table_id
            elif kind == "extensions" and isinstance(row, m.Extension):
                ref = row.id
            self._changes.append(Change(operator_id, kind, tenant_id, ref))

    def touch(self, change: Change) -> None:
        """Report a change the repositories did not see (a bulk UPDATE ...)."""
        self._changes.append(change)

    async def commit(self) -> None:
        try:
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
        t = m.Tenant
        counter = getattr(t, column)
        query = update(t).where(t.id == self.tenant.id).values({column: counter + delta})
        if delta > 0:
            query = query.where(counter + delta <= getattr(t, limit))
        result = await self.store.session.execute(
            query.execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise LimitReachedError(limit, getattr(self.tenant, limit))

    async def create_extension(
        self, values: Mapping[str, Any], sip_password: str | None
    ) -> m.Extension:
        await self.operator_scope.dial_plans.require("dial_plan_id", values.get("dial_plan_id"))
        data = dict(values)
        if await self.extensions.find(m.Extension.number == data["number"]) is not None:
            raise ConflictError(
                f"extension {data['number']} exists already", {"field": "number"}, code="duplicate"
            )
        await self._count("extension_count", "max_extensions", +1)
        row = m.Extension(id=m.new_id("ext"), **data)
        if sip_password is not None:
            self._set_sip_password(row, sip_password)
        return await self.extensions.add(row, secrets=_written(sip_password, "sip_password"))

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
        return await self.extensions.update(
            row, data, secrets=_written(sip_password, "sip_password")
        )

    async def delete_extension(self, row: m.Extension) -> None:
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
