"""Tenant scope: extensions (employees), with write-only SIP passwords stored as HA1."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func
from starlette.responses import Response

from pbxcore.admin.deps import (
    CurrentPage,
    CurrentStore,
    json_body_response,
    json_response,
    page_body,
)
from pbxcore.admin.schemas import (
    Email,
    ExtensionNumber,
    Id,
    In,
    ListOf,
    Out,
    SipPassword,
    Text,
)
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.views import view

router = APIRouter(tags=["extensions"])


class Forwarding(In):
    unconditional: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_seconds: int | None = Field(default=None, ge=5, le=120)
    unavailable: str | None = None

    @field_validator("unconditional", "busy", "no_answer", "unavailable")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        return None if value is None else rules.check_forward_target(value)


class ForwardingOut(BaseModel):
    unconditional: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_seconds: int | None = None
    unavailable: str | None = None


class ExtensionIn(In):
    number: ExtensionNumber
    name: Text = Field(default="", max_length=200)
    email: Email | None = None
    sip_password: SipPassword | None = None
    dial_plan_id: Id | None = None
    forwarding: Forwarding = Field(default_factory=Forwarding)
    enabled: bool = True


class ExtensionPatch(In):
    number: ExtensionNumber | None = None
    name: Text | None = Field(default=None, max_length=200)
    email: Email | None = None
    sip_password: SipPassword | None = None
    dial_plan_id: Id | None = None
    forwarding: Forwarding | None = None
    enabled: bool | None = None


class ExtensionOut(Out):
    tenant_id: str
    number: str
    name: str
    email: str | None
    dial_plan_id: str | None
    forwarding: ForwardingOut
    enabled: bool
    has_sip_password: bool


def _forwarding(value: Forwarding | None) -> dict[str, object]:
    if value is None:
        return {}
    return {k: v for k, v in value.model_dump().items() if v is not None}


@router.get(
    "/tenants/{t}/extensions", response_model=ListOf[ExtensionOut], summary="List extensions"
)
async def list_extensions(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    async def load() -> bytes:
        scope = await store.tenant(t)
        rows, total = await scope.extensions.list(
            page.limit, page.offset, order_by=(func.length(m.Extension.number), m.Extension.number)
        )
        return page_body([view(r) for r in rows], total)

    key = ("extensions", t, page.limit, page.offset)
    return json_body_response(await store.read_through(key, load))


@router.post(
    "/tenants/{t}/extensions",
    status_code=201,
    response_model=ExtensionOut,
    summary="Create an extension (max_extensions holds)",
)
async def create_extension(t: str, body: ExtensionIn, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    values = body.model_dump(exclude={"sip_password", "forwarding"})
    values["forwarding"] = _forwarding(body.forwarding)
    row = await scope.create_extension(values, body.sip_password)
    await store.commit()
    return json_response(view(row), 201)


@router.get("/tenants/{t}/extensions/{e}", response_model=ExtensionOut, summary="One extension")
async def get_extension(t: str, e: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    return json_response(view(await scope.extensions.get(e)))


@router.patch(
    "/tenants/{t}/extensions/{e}",
    response_model=ExtensionOut,
    summary="Change an extension (a new sip_password is used by the next REGISTER)",
)
async def patch_extension(t: str, e: str, body: ExtensionPatch, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.extensions.get(e)
    changes = body.changes()
    changes.pop("sip_password", None)
    for key in ("number", "name", "enabled"):
        if key in changes and changes[key] is None:
            del changes[key]
    if "forwarding" in changes:
        changes["forwarding"] = _forwarding(body.forwarding)
    await scope.update_extension(row, changes, body.sip_password)
    await store.commit()
    return json_response(view(row))


@router.delete("/tenants/{t}/extensions/{e}", status_code=204, summary="Delete an extension")
async def delete_extension(t: str, e: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    await scope.delete_extension(await scope.extensions.get(e))
    await store.commit()
    return Response(status_code=204)
