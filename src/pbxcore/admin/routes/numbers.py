"""DIDs: the operator's number pool (assigning numbers to tenants, within ``max_dids``) and
a tenant's own numbers (where their calls go)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, json_response, page_response
from pbxcore.admin.schemas import E164, Destination, DestinationOut, Id, In, ListOf, Out
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.views import view

router = APIRouter(tags=["numbers"])


class NumberOut(Out):
    number: str
    status: Literal["free", "assigned"]
    tenant_id: str | None
    destination: DestinationOut | None


class NumberIn(In):
    number: E164


class RangeIn(In):
    from_: E164 = Field(alias="from")
    to: E164


class RangeOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    count: int


class PoolPatch(In):
    tenant_id: Id | None = Field(
        default=None, description="Assign to this tenant of the operator; null releases it"
    )


class TenantNumberPatch(In):
    destination: Destination | None = None


# -- the operator's pool --------------------------------------------------------------------


@router.get(
    "/operators/{op}/numbers",
    response_model=ListOf[NumberOut],
    summary="The DID pool, by number (status=free|assigned to filter)",
)
async def list_pool(
    op: str,
    store: CurrentStore,
    page: CurrentPage,
    status: Literal["free", "assigned"] | None = None,
    tenant_id: str | None = None,
) -> Response:
    scope = await store.operator(op)
    criteria: list[ColumnElement[bool]] = []
    if status == "free":
        criteria.append(m.Did.tenant_id.is_(None))
    elif status == "assigned":
        criteria.append(m.Did.tenant_id.is_not(None))
    if tenant_id is not None:
        criteria.append(m.Did.tenant_id == tenant_id)
    rows, total = await scope.numbers.list(
        page.limit, page.offset, *criteria, order_by=(m.Did.number,)
    )
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/numbers",
    status_code=201,
    response_model=NumberOut,
    summary="Add a number to the pool (free)",
)
async def add_number(op: str, body: NumberIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.add_number(body.number)
    await store.commit()
    return json_response(view(row), 201)


# a literal path with a colon; "/numbers/{n}" has a slash, so the two never meet
@router.post(
    "/operators/{op}/numbers:bulk",
    status_code=201,
    response_model=RangeOut,
    summary=f"Add a range from..to (same length, at most {rules.MAX_NUMBER_RANGE}; all or none)",
)
async def add_number_range(op: str, body: RangeIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    count = await scope.add_number_range(body.from_, body.to)
    await store.commit()
    return json_response({"from": body.from_, "to": body.to, "count": count}, 201)


@router.get("/operators/{op}/numbers/{n}", response_model=NumberOut, summary="One pool number")
async def get_pool_number(op: str, n: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(await scope.numbers.get(n)))


@router.patch(
    "/operators/{op}/numbers/{n}",
    response_model=NumberOut,
    summary="Assign a number to a tenant (its max_dids holds) or release it (tenant_id null)",
)
async def patch_pool_number(op: str, n: str, body: PoolPatch, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.numbers.get(n)
    if "tenant_id" in body.changes():
        row = await scope.set_number_tenant(row, body.tenant_id)
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/numbers/{n}",
    status_code=204,
    summary="Remove a free number from the pool",
)
async def delete_pool_number(op: str, n: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    await scope.delete_number(await scope.numbers.get(n))
    await store.commit()
    return Response(status_code=204)


# -- a tenant's numbers ---------------------------------------------------------------------


@router.get("/tenants/{t}/numbers", response_model=ListOf[NumberOut], summary="The tenant's DIDs")
async def list_tenant_numbers(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.tenant(t)
    rows, total = await scope.numbers.list(page.limit, page.offset, order_by=(m.Did.number,))
    return page_response([view(r) for r in rows], total)


@router.get(
    "/tenants/{t}/numbers/{n}", response_model=NumberOut, summary="One of the tenant's DIDs"
)
async def get_tenant_number(t: str, n: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    return json_response(view(await scope.numbers.get(n)))


@router.patch(
    "/tenants/{t}/numbers/{n}",
    response_model=NumberOut,
    summary="Where calls to this DID go (destination null: nowhere yet)",
)
async def patch_tenant_number(
    t: str, n: str, body: TenantNumberPatch, store: CurrentStore
) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.numbers.get(n)
    if "destination" in body.changes():
        destination = None if body.destination is None else body.destination.stored()
        await scope.set_number_destination(row, destination)
    await store.commit()
    return json_response(view(row))
