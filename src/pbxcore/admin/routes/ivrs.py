"""Tenant scope: IVR menus (feature ``ivr``): a greeting, digits to destinations, timeouts.

A tenant without the ``ivr`` feature gets 403 ``feature_disabled`` on every write; the
prompts and destinations an IVR names must be the tenant's (422 naming the field); an IVR
still named by a DID or another IVR cannot be deleted (409 ``in_use``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field, field_validator
from starlette.responses import Response

from pbxcore.admin.deps import (
    CurrentPage,
    CurrentStore,
    json_body_response,
    json_response,
    page_body,
)
from pbxcore.admin.schemas import Destination, DestinationOut, Id, In, ListOf, Name, Out
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.views import view

router = APIRouter(tags=["ivrs"])

Timeout = Annotated[int, Field(ge=1, le=60, description="Seconds to wait for a digit")]
Retries = Annotated[int, Field(ge=0, le=9, description="Invalid or missing digits allowed")]


class IvrIn(In):
    name: Name
    greeting_prompt_id: Id | None = None
    options: dict[str, Destination] = Field(default_factory=dict, max_length=12)
    timeout_s: Timeout = 5
    invalid_prompt_id: Id | None = None
    max_retries: Retries = 2
    default_destination: Destination | None = None
    direct_dial: bool = False

    @field_validator("options")
    @classmethod
    def _digits(cls, value: dict[str, Destination]) -> dict[str, Destination]:
        rules.check_ivr_options({k: v.model_dump() for k, v in value.items()})
        return value


class IvrPatch(In):
    name: Name | None = None
    greeting_prompt_id: Id | None = None
    options: dict[str, Destination] | None = Field(default=None, max_length=12)
    timeout_s: Timeout | None = None
    invalid_prompt_id: Id | None = None
    max_retries: Retries | None = None
    default_destination: Destination | None = None
    direct_dial: bool | None = None

    @field_validator("options")
    @classmethod
    def _digits(cls, value: dict[str, Destination] | None) -> dict[str, Destination] | None:
        if value is not None:
            rules.check_ivr_options({k: v.model_dump() for k, v in value.items()})
        return value


class IvrOut(Out):
    tenant_id: str
    name: str
    greeting_prompt_id: str | None
    options: dict[str, DestinationOut]
    timeout_s: int
    invalid_prompt_id: str | None
    max_retries: int
    default_destination: DestinationOut | None
    direct_dial: bool


def _stored(body: In, fields: dict[str, Any]) -> dict[str, Any]:
    """The body's fields with destinations in their stored form."""
    values = dict(fields)
    options = getattr(body, "options", None)
    if "options" in values:
        values["options"] = {k: d.stored() for k, d in (options or {}).items()}
    default = getattr(body, "default_destination", None)
    if "default_destination" in values:
        values["default_destination"] = None if default is None else default.stored()
    return values


@router.get("/tenants/{t}/ivrs", response_model=ListOf[IvrOut], summary="List IVR menus")
async def list_ivrs(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.tenant(t)
    rows, total = await scope.ivrs.list(page.limit, page.offset, order_by=(m.Ivr.name,))
    return json_body_response(page_body([view(r) for r in rows], total))


@router.post(
    "/tenants/{t}/ivrs",
    status_code=201,
    response_model=IvrOut,
    summary="Create an IVR menu (the tenant needs the ivr feature)",
)
async def create_ivr(t: str, body: IvrIn, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.create_ivr(_stored(body, body.model_dump()))
    await store.commit()
    return json_response(view(row), 201)


@router.get("/tenants/{t}/ivrs/{ivr}", response_model=IvrOut, summary="One IVR menu")
async def get_ivr(t: str, ivr: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    return json_response(view(await scope.ivrs.get(ivr)))


@router.patch("/tenants/{t}/ivrs/{ivr}", response_model=IvrOut, summary="Change an IVR menu")
async def patch_ivr(t: str, ivr: str, body: IvrPatch, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.ivrs.get(ivr)
    changes = body.changes()
    for key in ("name", "options", "timeout_s", "max_retries", "direct_dial"):
        if key in changes and changes[key] is None:
            del changes[key]  # null for these is "unchanged"; prompts and default may be null
    await scope.update_ivr(row, _stored(body, changes))
    await store.commit()
    return json_response(view(row))


@router.delete("/tenants/{t}/ivrs/{ivr}", status_code=204, summary="Delete an IVR menu")
async def delete_ivr(t: str, ivr: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    await scope.delete_ivr(await scope.ivrs.get(ivr))
    await store.commit()
    return Response(status_code=204)
