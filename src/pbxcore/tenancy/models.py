"""The stored data model: the platform, its operators and their client PBXs (tenants).

SQLAlchemy 2 declarative tables, the same on SQLite and PostgreSQL. Every row below the
operator carries its ``operator_id`` (and a tenant's rows their ``tenant_id``), so that a
scoped query is one indexed comparison, never a join. Secrets are never stored in clear:
admin passwords as argon2 hashes, extension SIP passwords as digest HA1 (MD5 and SHA-256),
trunk passwords encrypted with the node's secret key (:mod:`pbxcore.tenancy.secrets`).

The Alembic migrations in ``tenancy/migrations/versions`` create these tables; a change
here needs a new migration (``tests/test_tenancy_migrations.py`` compares the two).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEntry",
    "Base",
    "Cdr",
    "DialPlanRow",
    "Did",
    "Extension",
    "Ivr",
    "MailMessage",
    "Operator",
    "PlatformEvent",
    "Prompt",
    "Route",
    "RouteTableRow",
    "Schedule",
    "Session",
    "Tenant",
    "Trunk",
    "User",
    "new_id",
    "utcnow",
]

# constraint names that Alembic and both dialects agree on
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 128 random bits (``ten_3f9c...``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both stores (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UtcDateTime(),
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class _Stamped:
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Operator(_Stamped, Base):
    """A white-label partner: its domain, branding, trunks, number pool and routes."""

    __tablename__ = "operators"
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    branding: Mapped[dict[str, Any]] = mapped_column(default=dict)


class User(_Stamped, Base):
    """A person who logs in: platform admin, operator admin or tenant admin.

    ``login`` is what they type: the username for platform and operator admins,
    ``name@slug.operator-domain`` for a tenant's admins. It is unique on the platform.
    """

    __tablename__ = "users"
    role: Mapped[str] = mapped_column(String(20))
    login: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(64))
    operator_id: Mapped[str | None] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    password_hash: Mapped[str] = mapped_column(String(200))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))


class Session(Base):
    """A bearer token's server side: only a SHA-256 of its secret is kept."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    client_ip: Mapped[str | None] = mapped_column(String(45))


class Tenant(_Stamped, Base):
    """A client PBX on ``slug.operator-domain``; ``extension_count`` and ``did_count`` are
    kept in step with its rows so that a limit is one conditional UPDATE."""

    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("operator_id", "slug"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63))
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    features: Mapped[list[Any]] = mapped_column(default=list)
    max_extensions: Mapped[int] = mapped_column(Integer, default=10)
    max_concurrent_calls: Mapped[int] = mapped_column(Integer, default=4)
    max_dids: Mapped[int] = mapped_column(Integer, default=2)
    international_calls: Mapped[bool] = mapped_column(Boolean, default=False)
    route_table_id: Mapped[str | None] = mapped_column(ForeignKey("route_tables.id"))
    dedicated_trunk_id: Mapped[str | None] = mapped_column(ForeignKey("trunks.id"))
    dial_plan_id: Mapped[str | None] = mapped_column(ForeignKey("dial_plans.id"))
    expected_users: Mapped[int | None] = mapped_column(Integer)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    digest_algorithms: Mapped[list[Any]] = mapped_column(default=lambda: ["MD5", "SHA-256"])
    max_call_duration_s: Mapped[int | None] = mapped_column(Integer)
    extension_count: Mapped[int] = mapped_column(Integer, default=0)
    did_count: Mapped[int] = mapped_column(Integer, default=0)


class Extension(_Stamped, Base):
    """An employee's number inside a tenant, with its SIP credentials as HA1 only."""

    __tablename__ = "extensions"
    __table_args__ = (UniqueConstraint("tenant_id", "number"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    ha1_md5: Mapped[str | None] = mapped_column(String(32))
    ha1_sha256: Mapped[str | None] = mapped_column(String(64))
    dial_plan_id: Mapped[str | None] = mapped_column(ForeignKey("dial_plans.id"))
    forwarding: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Prompt(_Stamped, Base):
    """A tenant's prompt (an IVR greeting, a voicemail greeting, music on hold): its audio
    as 8 kHz μ-law, in the database so that every node plays the same one."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(Integer)
    # not loaded with the row (lists, the snapshot): read with Store.prompt_audio
    audio: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)


class Ivr(_Stamped, Base):
    """A tenant's voice menu: a greeting, digits mapped to destinations, its timeouts."""

    __tablename__ = "ivrs"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    greeting_prompt_id: Mapped[str | None] = mapped_column(ForeignKey("prompts.id"))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # digit -> destination
    timeout_s: Mapped[int] = mapped_column(Integer, default=5)
    invalid_prompt_id: Mapped[str | None] = mapped_column(ForeignKey("prompts.id"))
    max_retries: Mapped[int] = mapped_column(Integer, default=2)
    default_destination: Mapped[dict[str, Any] | None] = mapped_column(Json)
    direct_dial: Mapped[bool] = mapped_column(Boolean, default=False)


class Schedule(_Stamped, Base):
    """A tenant's business hours: weekly open hours and holidays in a time zone, and
    where calls go when open and when closed."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    time_zone: Mapped[str] = mapped_column(String(64))
    weekly: Mapped[list[Any]] = mapped_column(default=list)  # [{"days", "open", "close"}]
    holidays: Mapped[list[Any]] = mapped_column(default=list)  # ISO dates
    open_destination: Mapped[dict[str, Any] | None] = mapped_column(Json)
    closed_destination: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Trunk(_Stamped, Base):
    """A connection to an upstream carrier; its password is encrypted, never returned."""

    __tablename__ = "trunks"
    __table_args__ = (UniqueConstraint("operator_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer, default=5060)
    transport: Mapped[str] = mapped_column(String(3), default="udp")
    auth_username: Mapped[str | None] = mapped_column(String(128))
    auth_password: Mapped[bytes | None] = mapped_column(LargeBinary)
    register: Mapped[bool] = mapped_column(Boolean, default=False)
    inbound_ips: Mapped[list[Any]] = mapped_column(default=list)
    number_format: Mapped[str] = mapped_column(String(20), default="e164")
    caller_id: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_channels: Mapped[int | None] = mapped_column(Integer)
    rate_per_minute: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class RouteTableRow(_Stamped, Base):
    """A named least-cost route table of an operator (its routes are :class:`Route`)."""

    __tablename__ = "route_tables"
    __table_args__ = (UniqueConstraint("operator_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))


class Route(_Stamped, Base):
    """One prefix → trunk entry of a route table."""

    __tablename__ = "routes"
    __table_args__ = (Index("ix_routes_table_prefix", "route_table_id", "prefix"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    route_table_id: Mapped[str] = mapped_column(ForeignKey("route_tables.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(32), default="")
    trunk_id: Mapped[str] = mapped_column(ForeignKey("trunks.id"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=1)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    cost_per_minute: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class DialPlanRow(_Stamped, Base):
    """A stored dial plan: own rules first, then the country's built-in rules."""

    __tablename__ = "dial_plans"
    __table_args__ = (UniqueConstraint("operator_id", "name"),)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2), default="RU")
    default_area_code: Mapped[str | None] = mapped_column(String(8))
    rules: Mapped[list[Any]] = mapped_column(default=list)
    extension_digits: Mapped[int | None] = mapped_column(Integer)


class Did(_Stamped, Base):
    """A number of an operator's pool; assigned to at most one tenant at a time."""

    __tablename__ = "dids"
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[str] = mapped_column(String(16), unique=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="SET NULL"), index=True
    )
    destination: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Cdr(Base):
    """A call detail record (written by the call path, read through the API).

    A call in progress has an open row: ``disposition`` ``"in_progress"``, no ``ended_at``,
    and ``node_id`` the node that handles it (so that this node, restarted after a crash,
    closes its own open rows as ``"failed"``; see :mod:`pbxcore.pbx.cdr`).
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        Index("ix_cdrs_tenant_started", "tenant_id", "started_at"),
        Index("ix_cdrs_node_disposition", "node_id", "disposition"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(String(200))
    direction: Mapped[str] = mapped_column(String(10))
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    extension: Mapped[str | None] = mapped_column(String(16))
    started_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[int] = mapped_column(Integer, default=0)
    billsec: Mapped[int] = mapped_column(Integer, default=0)
    disposition: Mapped[str] = mapped_column(String(12))
    trunk_id: Mapped[str | None] = mapped_column(String(40))
    cost: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    explain: Mapped[dict[str, Any] | None] = mapped_column(Json)
    node_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """Who changed what, when, with the object before and after (secrets masked)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_operator_at", "operator_id", "at"),
        Index("ix_audit_tenant_at", "tenant_id", "at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    operator_id: Mapped[str | None] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    actor_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(16))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(40))
    before: Mapped[dict[str, Any] | None] = mapped_column(Json)
    after: Mapped[dict[str, Any] | None] = mapped_column(Json)


class PlatformEvent(Base):
    """A platform event of an operator (a phone registered, a trunk's registration state,
    a call that failed), written in batches by :mod:`pbxcore.pbx.events`, kept for a while
    (the writer prunes old rows). No foreign keys: an event outlives what it names."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_operator_at", "operator_id", "at"),
        Index("ix_events_at", "at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    operator_id: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200))  # the AOR, trunk id or dialed number
    call_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[int | None] = mapped_column(Integer)  # a SIP status
    node_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json)


class MailMessage(Base):
    """The mail outbox: a message stays here until the SMTP server has taken it."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "sent_at", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    operator_id: Mapped[str | None] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    to_addr: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    # a sender (one per node) holds a message until then; another may take it after
    claimed_until: Mapped[datetime | None]
