"""Operator scope: client PBXs (tenants) and their admins."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, context, json_response, page_response
from pbxcore.admin.mail import welcome_mail
from pbxcore.admin.schemas import (
    DigestAlgorithms,
    Email,
    Features,
    Id,
    In,
    ListOf,
    Name,
    Out,
    Password,
    Slug,
    TimeZone,
    Username,
)
from pbxcore.tenancy import models as m
from pbxcore.tenancy.errors import ConflictError
from pbxcore.tenancy.secrets import generate_password
from pbxcore.tenancy.store import TenantScope
from pbxcore.tenancy.views import view

router = APIRouter(tags=["tenants"])

Status = Literal["active", "suspended"]


class Limits(In):
    max_extensions: int = Field(default=10, ge=0, le=100_000)
    max_concurrent_calls: int = Field(default=4, ge=0, le=100_000)
    max_dids: int = Field(default=2, ge=0, le=1_000_000)
    international_calls: bool = False


class LimitsPatch(In):
    max_extensions: int | None = Field(default=None, ge=0, le=100_000)
    max_concurrent_calls: int | None = Field(default=None, ge=0, le=100_000)
    max_dids: int | None = Field(default=None, ge=0, le=1_000_000)
    international_calls: bool | None = None


class SipSettings(In):
    digest_algorithms: DigestAlgorithms = Field(default_factory=lambda: ["MD5", "SHA-256"])


class TenantIn(In):
    name: Name
    slug: Slug
    status: Status = "active"
    features: Features = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    route_table_id: Id | None = None
    dedicated_trunk_id: Id | None = None
    dial_plan_id: Id | None = None
    expected_users: int | None = Field(default=None, ge=0, le=1_000_000)
    time_zone: TimeZone = "UTC"
    sip: SipSettings = Field(default_factory=SipSettings)
    max_call_duration_s: int | None = Field(default=None, ge=1, le=86_400)


class TenantPatch(In):
    name: Name | None = None
    slug: Slug | None = None
    status: Status | None = None
    features: Features | None = None
    limits: LimitsPatch | None = None
    route_table_id: Id | None = None
    dedicated_trunk_id: Id | None = None
    dial_plan_id: Id | None = None
    expected_users: int | None = Field(default=None, ge=0, le=1_000_000)
    time_zone: TimeZone | None = None
    sip: SipSettings | None = None
    max_call_duration_s: int | None = Field(default=None, ge=1, le=86_400)


class LimitsOut(BaseModel):
    max_extensions: int
    max_concurrent_calls: int
    max_dids: int
    international_calls: bool


class SipOut(BaseModel):
    digest_algorithms: list[str]


class UsageOut(BaseModel):
    extensions: int
    dids: int


class TenantOut(Out):
    operator_id: str
    name: str
    slug: str
    domain: str
    status: str
    features: list[str]
    limits: LimitsOut
    route_table_id: str | None
    dedicated_trunk_id: str | None
    dial_plan_id: str | None
    expected_users: int | None
    time_zone: str
    sip: SipOut
    max_call_duration_s: int | None
    usage: UsageOut


_NOT_NULL = frozenset({"name", "status", "features", "time_zone", "slug"})


def _columns(changes: dict[str, Any]) -> dict[str, Any]:
    """The API's nested fields (``limits``, ``sip``) as the tenant's columns."""
    data = dict(changes)
    for key in [k for k, v in data.items() if v is None and k in _NOT_NULL]:
        del data[key]
    limits = data.pop("limits", None) or {}
    data.update({k: v for k, v in limits.items() if v is not None})
    sip = data.pop("sip", None)
    if sip is not None:
        data["digest_algorithms"] = sip["digest_algorithms"]
    return data


@router.get("/operators/{op}/tenants", response_model=ListOf[TenantOut], summary="List client PBXs")
async def list_tenants(op: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.operator(op)
    rows, total = await scope.tenants.list(page.limit, page.offset)
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/tenants",
    status_code=201,
    response_model=TenantOut,
    summary="Create a client PBX on slug.operator-domain",
)
async def create_tenant(op: str, body: TenantIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.create_tenant(_columns(body.model_dump()))
    await store.commit()
    return json_response(view(row), 201)


@router.get("/operators/{op}/tenants/{t}", response_model=TenantOut, summary="One client PBX")
async def get_tenant(op: str, t: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(await scope.tenants.get(t)))


@router.patch(
    "/operators/{op}/tenants/{t}",
    response_model=TenantOut,
    summary="Change a client PBX (features, limits, status, routing ...)",
)
async def patch_tenant(op: str, t: str, body: TenantPatch, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.tenants.get(t)
    await scope.update_tenant(row, _columns(body.changes()))
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/tenants/{t}",
    status_code=204,
    summary="Delete a client PBX (its DIDs return to the pool)",
)
async def delete_tenant(op: str, t: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    await scope.delete_tenant(await scope.tenants.get(t))
    await store.commit()
    return Response(status_code=204)


# -- the client admins (operator scope, under /tenants/{t}) ---------------------------------


class TenantAdminIn(In):
    username: Username
    full_name: str = Field(default="", max_length=200)
    email: Email
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,32}$")
    password: Password | None = None


class TenantAdminPatch(In):
    full_name: str | None = Field(default=None, max_length=200)
    email: Email | None = None
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,32}$")
    password: Password | None = None


class TenantAdminOut(Out):
    username: str
    login: str
    role: str
    operator_id: str | None
    tenant_id: str | None
    full_name: str
    email: str | None
    phone: str | None


class TenantAdminCreated(TenantAdminOut):
    password: str | None = Field(
        default=None, description="The generated password, shown once (absent if one was given)"
    )
    login_url: str


def login_url(scope: TenantScope, scheme: str) -> str:
    return f"{scheme}://{scope.tenant.domain}/"


@router.get(
    "/tenants/{t}/admins", response_model=ListOf[TenantAdminOut], summary="A client PBX's admins"
)
async def list_tenant_admins(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.tenant(t)
    rows, total = await scope.admins.list(page.limit, page.offset)
    return page_response([view(r) for r in rows], total)


@router.post(
    "/tenants/{t}/admins",
    status_code=201,
    response_model=TenantAdminCreated,
    summary="Create the client admin (a welcome e-mail goes out)",
)
async def create_tenant_admin(
    request: Request, t: str, body: TenantAdminIn, store: CurrentStore
) -> Response:
    ctx = context(request)
    scope = await store.tenant(t)
    scope.require_operator()
    login = scope.login_of(body.username)
    if await store.find_login(login) is not None:
        raise ConflictError(
            f"the username {body.username!r} is taken in this PBX",
            {"field": "username"},
            code="duplicate",
        )
    password = body.password or generate_password()
    row = await store.create_user(
        scope.admins,
        role="tenant_admin",
        username=body.username,
        password=password,
        login=login,
        full_name=body.full_name,
        email=body.email,
        phone=body.phone,
    )
    url = login_url(scope, ctx.settings.login_url_scheme)
    await queue_welcome_mail(store, scope, row, url)
    await store.commit()
    if ctx.mail_queued is not None:
        ctx.mail_queued()
    out = view(row) | {"login_url": url}
    if body.password is None:
        out["password"] = password
    return json_response(out, 201)


async def queue_welcome_mail(store: Any, scope: TenantScope, admin: m.User, url: str) -> None:
    """Put the welcome mail in the outbox, in the same transaction as the admin."""
    store.session.add(welcome_mail(scope.operator, scope.tenant, admin, url))


async def _tenant_admin(store: CurrentStore, t: str, admin: str) -> tuple[TenantScope, m.User]:
    scope = await store.tenant(t)
    return scope, await scope.admins.get(admin)


@router.get(
    "/tenants/{t}/admins/{admin}", response_model=TenantAdminOut, summary="One client admin"
)
async def get_tenant_admin(t: str, admin: str, store: CurrentStore) -> Response:
    _scope, row = await _tenant_admin(store, t, admin)
    return json_response(view(row))


@router.patch(
    "/tenants/{t}/admins/{admin}", response_model=TenantAdminOut, summary="Change a client admin"
)
async def patch_tenant_admin(
    request: Request, t: str, admin: str, body: TenantAdminPatch, store: CurrentStore
) -> Response:
    scope, row = await _tenant_admin(store, t, admin)
    scope.require_operator()
    if await store.update_user(scope.admins, row, body.changes()):
        context(request).sessions.drop_user(row.id)
    await store.commit()
    return json_response(view(row))


@router.delete("/tenants/{t}/admins/{admin}", status_code=204, summary="Delete a client admin")
async def delete_tenant_admin(t: str, admin: str, store: CurrentStore) -> Response:
    scope, row = await _tenant_admin(store, t, admin)
    scope.require_operator()
    await scope.admins.delete(row)
    await store.commit()
    return Response(status_code=204)
