"""Schedules (business hours) through the API, on both stores: the schedules feature
gates them, periods and holidays are checked with precise messages, destinations must be
the tenant's, a schedule in use cannot be deleted, random bodies never give a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_fixtures import Api

WEEKDAYS = [{"days": ["mon", "tue", "wed", "thu", "fri"], "open": "09:00", "close": "18:00"}]


async def _tenant(api: Api, features: list[str]) -> tuple[str, str, str]:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme", features=features, time_zone="Europe/Moscow")
    ext = await api.create(f"/tenants/{t['id']}/extensions", {"number": "201"})
    return op["id"], t["id"], ext["id"]


async def test_a_schedule_and_a_did_that_follows_it(api: Api) -> None:
    op, t, ext = await _tenant(api, ["schedules"])
    base = f"/tenants/{t}/schedules"
    schedule = await api.create(
        base,
        {
            "name": "Office",
            "weekly": WEEKDAYS,
            "holidays": ["2027-01-01", "2026-12-31", "2027-01-01"],
            "open_destination": {"type": "extension", "id": ext},
            "closed_destination": {"type": "hangup"},
        },
    )
    assert schedule["time_zone"] == "Europe/Moscow"  # the tenant's
    assert schedule["holidays"] == ["2026-12-31", "2027-01-01"]  # sorted, once each
    r = await api.patch(f"{base}/{schedule['id']}", json={"time_zone": "Asia/Vladivostok"})
    assert r.status_code == 200 and r.json()["time_zone"] == "Asia/Vladivostok"
    await api.create(f"/operators/{op}/numbers", {"number": "+74950000001"})
    [did] = (await api.get(f"/operators/{op}/numbers")).json()["items"]
    await api.patch(f"/operators/{op}/numbers/{did['id']}", json={"tenant_id": t})
    r = await api.patch(
        f"/tenants/{t}/numbers/{did['id']}",
        json={"destination": {"type": "schedule", "id": schedule["id"]}},
    )
    assert r.status_code == 200, r.text
    r = await api.delete(f"{base}/{schedule['id']}")
    assert r.status_code == 409 and "+74950000001" in r.json()["error"]["message"], r.text
    await api.patch(f"/tenants/{t}/numbers/{did['id']}", json={"destination": None})
    assert (await api.delete(f"{base}/{schedule['id']}")).status_code == 204


async def test_the_schedules_feature_gates_them(api: Api) -> None:
    _op, t, _ext = await _tenant(api, [])
    r = await api.post(f"/tenants/{t}/schedules", json={"name": "Office"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "feature_disabled"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"weekly": [{"days": ["mon"], "open": "18:00", "close": "09:00"}]},
            "weekly",
            "is not after open",
        ),
        (
            {"weekly": [{"days": ["monday"], "open": "09:00", "close": "18:00"}]},
            "weekly",
            "is not a day",
        ),
        (
            {"weekly": [{"days": ["mon"], "open": "9:00", "close": "18:00"}]},
            "weekly",
            "is not a time HH:MM",
        ),
        (
            {"weekly": [{"days": ["mon"], "open": "09:00", "close": "24:30"}]},
            "weekly",
            "is not a time",
        ),
        ({"holidays": ["2026-13-01"]}, "holidays", "is not a date"),
        ({"holidays": ["20261201"]}, "holidays", "is not a date"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "IANA"),
        (
            {"open_destination": {"type": "extension", "id": "ext_nope"}},
            "open_destination",
            "no extension",
        ),
        (
            {"closed_destination": {"type": "schedule", "id": "sch_nope"}},
            "closed_destination",
            "no schedule",
        ),
    ],
)
async def test_bad_schedules_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str, message: str
) -> None:
    _op, t, _ext = await _tenant(api, ["schedules"])
    r = await api.post(f"/tenants/{t}/schedules", json={"name": "S"} | body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"]["field"].startswith(field) and message in error["message"], error


@pytest.fixture
async def schedules_tenant(api: Api) -> str:
    op = await api.operator()
    return str((await api.tenant(op["id"], "fuzz", features=["schedules"]))["id"])


_periods = st.lists(
    st.fixed_dictionaries(
        {
            "days": st.lists(st.sampled_from(["mon", "sun", "xyz", ""]), max_size=3),
            "open": st.one_of(st.sampled_from(["09:00", "24:00", "00:00"]), st.text(max_size=6)),
            "close": st.one_of(st.sampled_from(["18:00", "08:59", "24:00"]), st.text(max_size=6)),
        }
    ),
    max_size=3,
)
_bodies = st.fixed_dictionaries(
    {"name": st.text(max_size=20)},
    optional={
        "weekly": st.one_of(_periods, st.integers()),
        "holidays": st.lists(st.one_of(st.dates().map(str), st.text(max_size=12)), max_size=3),
        "time_zone": st.sampled_from(["UTC", "Europe/Moscow", "bad/zone", ""]),
        "open_destination": st.one_of(
            st.none(), st.fixed_dictionaries({"type": st.sampled_from(["hangup", "ivr", "x"])})
        ),
    },
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
async def test_random_schedules_never_give_a_5xx(
    api: Api, schedules_tenant: str, body: Any
) -> None:
    r = await api.post(
        f"/tenants/{schedules_tenant}/schedules",
        content=json.dumps(body),
        headers=api.admin | {"content-type": "application/json"},
    )
    assert r.status_code in (201, 409, 422), (body, r.text)
