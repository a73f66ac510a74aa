"""Tenant scope: schedules (feature ``schedules``): business hours in a time zone.

``weekly`` periods (``{"days": ["mon", ...], "open": "09:00", "close": "18:00"}``) and
``holidays`` (ISO dates) say when the business is open; a DID, an IVR digit or another
schedule that names the schedule sends its calls to ``open_destination`` or
``closed_destination`` by the time of the call in the schedule's time zone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from pbxcore.admin.deps import (
    CurrentPage,
    CurrentStore,
    json_body_response,
    json_response,
    page_body,
)
from pbxcore.admin.schemas import Destination, DestinationOut, In, ListOf, Name, Out, TimeZone
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.views import view

router = APIRouter(tags=["schedules"])


class Period(BaseModel):
    days: list[str] = Field(min_length=1, max_length=7)
    open: str = Field(max_length=5)
    close: str = Field(max_length=5)


class PeriodOut(BaseModel):
    days: list[str]
    open: str
    close: str


def _weekly(value: list[Period] | None) -> list[Period] | None:
    if value is not None:
        rules.check_weekly([p.model_dump() for p in value])
    return value


def _holidays(value: list[str] | None) -> list[str] | None:
    return None if value is None else rules.check_holidays(value)


class ScheduleIn(In):
    name: Name
    time_zone: TimeZone | None = None  # the tenant's when not given
    weekly: list[Period] = Field(default_factory=list, max_length=50)
    holidays: list[str] = Field(default_factory=list)
    open_destination: Destination | None = None
    closed_destination: Destination | None = None

    _check_weekly = field_validator("weekly")(_weekly)
    _check_holidays = field_validator("holidays")(_holidays)


class SchedulePatch(In):
    name: Name | None = None
    time_zone: TimeZone | None = None
    weekly: list[Period] | None = Field(default=None, max_length=50)
    holidays: list[str] | None = None
    open_destination: Destination | None = None
    closed_destination: Destination | None = None

    _check_weekly = field_validator("weekly")(_weekly)
    _check_holidays = field_validator("holidays")(_holidays)


class ScheduleOut(Out):
    tenant_id: str
    name: str
    time_zone: str
    weekly: list[PeriodOut]
    holidays: list[str]
    open_destination: DestinationOut | None
    closed_destination: DestinationOut | None


def _stored(body: ScheduleIn | SchedulePatch, fields: dict[str, Any]) -> dict[str, Any]:
    values = dict(fields)
    if values.get("weekly") is not None:
        values["weekly"] = rules.check_weekly(values["weekly"])
    if values.get("holidays") is not None:
        values["holidays"] = rules.check_holidays(values["holidays"])
    for key in ("open_destination", "closed_destination"):
        if key in values:
            destination = getattr(body, key)
            values[key] = None if destination is None else destination.stored()
    return values


@router.get("/tenants/{t}/schedules", response_model=ListOf[ScheduleOut], summary="List schedules")
async def list_schedules(t: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.tenant(t)
    rows, total = await scope.schedules.list(page.limit, page.offset, order_by=(m.Schedule.name,))
    return json_body_response(page_body([view(r) for r in rows], total))


@router.post(
    "/tenants/{t}/schedules",
    status_code=201,
    response_model=ScheduleOut,
    summary="Create a schedule (the tenant needs the schedules feature)",
)
async def create_schedule(t: str, body: ScheduleIn, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    values = _stored(body, body.model_dump())
    if values["time_zone"] is None:
        del values["time_zone"]
    row = await scope.create_schedule(values)
    await store.commit()
    return json_response(view(row), 201)


@router.get("/tenants/{t}/schedules/{s}", response_model=ScheduleOut, summary="One schedule")
async def get_schedule(t: str, s: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t)
    return json_response(view(await scope.schedules.get(s)))


@router.patch("/tenants/{t}/schedules/{s}", response_model=ScheduleOut, summary="Change a schedule")
async def patch_schedule(t: str, s: str, body: SchedulePatch, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    row = await scope.schedules.get(s)
    changes = body.changes()
    for key in ("name", "time_zone", "weekly", "holidays"):
        if key in changes and changes[key] is None:
            del changes[key]
    await scope.update_schedule(row, _stored(body, changes))
    await store.commit()
    return json_response(view(row))


@router.delete("/tenants/{t}/schedules/{s}", status_code=204, summary="Delete a schedule")
async def delete_schedule(t: str, s: str, store: CurrentStore) -> Response:
    scope = await store.tenant(t, write=True)
    await scope.delete_schedule(await scope.schedules.get(s))
    await store.commit()
    return Response(status_code=204)
