"""``GET /api/v1/operators/{op}/events``: the operator's recent platform events.

Registrations and unregistrations of its tenants' phones, its trunks' registration state,
calls that failed (with the SIP status the caller got); newest first, filterable by
``type``, ``tenant_id`` and ``since``. Only the operator's own events: another operator's
id is 404, a tenant id of another operator matches nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, page_response
from pbxcore.admin.schemas import Id, ListOf, Out
from pbxcore.tenancy import models as m
from pbxcore.tenancy.errors import InvalidError
from pbxcore.tenancy.views import view

router = APIRouter(tags=["events"])

EventTypeName = Literal["registration", "unregistration", "trunk_state", "call_failed"]


class EventOut(Out):
    at: str
    type: str
    operator_id: str
    tenant_id: str | None
    subject: str
    call_id: str | None
    status: int | None
    node_id: str | None
    detail: dict[str, Any] | None


@router.get(
    "/operators/{op}/events",
    response_model=ListOf[EventOut],
    summary="The operator's recent platform events (registrations, trunks, failed calls)",
)
async def operator_events(
    op: str,
    store: CurrentStore,
    page: CurrentPage,
    *,
    type: Annotated[EventTypeName | None, Query(description="Only events of this type")] = None,
    tenant_id: Annotated[
        Id | None, Query(description="Only events of this client PBX")  # no NUL: PostgreSQL
    ] = None,
    since: Annotated[
        datetime | None,
        Query(description="Only events at or after this time (ISO 8601; no zone: UTC)"),
    ] = None,
) -> Response:
    scope = await store.operator(op)
    e = m.PlatformEvent
    criteria: list[ColumnElement[bool]] = []
    if type is not None:
        criteria.append(e.type == type)
    if tenant_id is not None:
        criteria.append(e.tenant_id == tenant_id)
    if since is not None:
        try:
            since_utc = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise InvalidError("since", "the time is out of range") from None
        criteria.append(e.at >= since_utc)
    rows, total = await scope.events.list(
        page.limit, page.offset, *criteria, order_by=(e.at.desc(), e.id.desc())
    )
    return page_response([view(r) for r in rows], total)
