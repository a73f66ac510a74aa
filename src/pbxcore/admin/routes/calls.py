"""Tenant scope: call detail records (written by the call path), newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, json_response, page_response
from pbxcore.admin.schemas import ListOf, Out
from pbxcore.tenancy import models as m
from pbxcore.tenancy.errors import InvalidError
from pbxcore.tenancy.store import call_stats
from pbxcore.tenancy.views import cdr_detail, view

router = APIRouter(tags=["calls"])

Direction = Literal["internal", "inbound", "outbound"]
Disposition = Literal["answered", "busy", "no_answer", "failed", "cancelled"]
# an ended call has one of the five above; a call in progress has an open row (pbx/cdr.py)
CallState = Literal["answered", "busy", "no_answer", "failed", "cancelled", "in_progress"]


class CallOut(Out):
    model_config = ConfigDict(populate_by_name=True)

    call_id: str
    direction: Direction
    from_: str = Field(alias="from")
    to: str
    extension: str | None
    started_at: str
    answered_at: str | None
    ended_at: str | None
    duration_s: int
    billsec: int
    disposition: CallState = Field(
        description="How the call ended; `in_progress` while it lasts (no `ended_at` yet)"
    )
    trunk_id: str | None
    cost: float | None


class CallDetailOut(CallOut):
    explain: dict[str, Any] | None = Field(
        description="The routing decision of an outbound call: the trunk candidates and why"
    )


@router.get(
    "/tenants/{t}/calls",
    response_model=ListOf[CallOut],
    summary="Call detail records, newest first (by started_at)",
)
async def list_calls(
    t: str,
    store: CurrentStore,
    page: CurrentPage,
    *,
    direction: Direction | None = None,
    disposition: CallState | None = None,
    extension: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="Calls started at or after this time (ISO 8601)"),
    ] = None,
    until: Annotated[
        AwareDatetime | None,
        Query(alias="to", description="Calls started before this time (ISO 8601)"),
    ] = None,
) -> Response:
    scope = await store.tenant(t)
    scope.require_admin()
    if since is not None and until is not None and until < since:
        raise InvalidError("to", "must not be before from")
    c = m.Cdr
    criteria: list[ColumnElement[bool]] = []
    if direction is not None:
        criteria.append(c.direction == direction)
    if disposition is not None:
        criteria.append(c.disposition == disposition)
    if extension is not None:
        criteria.append(c.extension == extension)
    if since is not None:
        criteria.append(c.started_at >= since)
    if until is not None:
        criteria.append(c.started_at < until)
    rows, total = await scope.calls.list(
        page.limit, page.offset, *criteria, order_by=(c.started_at.desc(), c.id.desc())
    )
    return page_response([view(r) for r in rows], total)


@router.get(
    "/tenants/{t}/calls/{call}",
    response_model=CallDetailOut,
    summary="One call detail record with its routing explain trace",
)
async def get_call(t: str, call: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    scope.require_admin()
    return json_response(cdr_detail(await scope.calls.get(call)))


class StatsBucket(BaseModel):
    calls: int
    answered: int
    missed: int
    billsec: int


class ExtensionStats(StatsBucket):
    extension: str


class DayStats(StatsBucket):
    date: str


class StatsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    time_zone: str
    total: StatsBucket
    extensions: list[ExtensionStats]
    days: list[DayStats]


@router.get(
    "/tenants/{t}/stats",
    response_model=StatsOut,
    summary="Per-extension and per-day call aggregates (days in the tenant's time zone)",
)
async def call_statistics(
    t: str,
    store: CurrentStore,
    *,
    since: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="Start (ISO 8601; default: 30 days before `to`)"),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(alias="to", description="End, exclusive (default: now)")
    ] = None,
) -> Response:
    scope = await store.tenant(t)
    scope.require_admin()
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=30)
    return json_response(await call_stats(scope, start, end))
