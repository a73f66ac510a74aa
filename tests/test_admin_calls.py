"""Call detail records through the API, on both stores.

No call path writes CDRs yet: the tests insert rows as it will, through the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pbxcore.tenancy import models as m
from tests.api_fixtures import Api

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
EXPLAIN = {
    "number": "74951234567",
    "prefixes": [{"prefix": "7495", "used": True, "reason": "longest matching prefix"}],
    "candidates": ["trk_a"],
}


def cdr(tenant: dict[str, Any], minutes: int, **fields: Any) -> m.Cdr:
    started = T0 + timedelta(minutes=minutes)
    values: dict[str, Any] = {
        "id": m.new_id("cdr"),
        "operator_id": tenant["operator_id"],
        "tenant_id": tenant["id"],
        "call_id": f"call-{minutes}@pbx",
        "direction": "internal",
        "from_number": "101",
        "to_number": "102",
        "extension": "101",
        "started_at": started,
        "answered_at": started + timedelta(seconds=3),
        "ended_at": started + timedelta(seconds=63),
        "duration_s": 63,
        "billsec": 60,
        "disposition": "answered",
    } | fields
    return m.Cdr(**values)


async def insert(api: Api, *rows: m.Cdr) -> list[str]:
    async with api.ctx.db.session() as session:
        session.add_all(rows)
        await session.commit()
    return [r.id for r in rows]


async def _tenants(api: Api) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme")
    other = await api.tenant(op["id"], "beta")
    await api.create(
        f"/tenants/{t['id']}/admins",
        {"username": "boss", "email": "boss@acme.example", "password": "boss-secret-pw"},
    )
    boss = await api.login("boss@acme.voip.example.net", "boss-secret-pw")
    return t, other, boss


async def test_list_newest_first_and_fields(api: Api) -> None:
    t, other, boss = await _tenants(api)
    ids = await insert(
        api,
        cdr(t, 0),
        cdr(
            t,
            10,
            direction="outbound",
            from_number="101",
            to_number="+74951234567",
            trunk_id="trk_a",
            cost=Decimal("0.125"),
            explain=EXPLAIN,
        ),
        cdr(t, 5, direction="inbound", from_number="+74997654321", to_number="+74951112233"),
        cdr(other, 20),
    )
    r = await api.get(f"/tenants/{t['id']}/calls", boss)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 3
    assert [c["id"] for c in page["items"]] == [ids[1], ids[2], ids[0]]
    out = page["items"][0]
    assert out == {
        "id": ids[1],
        "created_at": out["created_at"],
        "updated_at": out["updated_at"],
        "call_id": "call-10@pbx",
        "direction": "outbound",
        "from": "101",
        "to": "+74951234567",
        "extension": "101",
        "started_at": "2024-05-06T09:10:00Z",
        "answered_at": "2024-05-06T09:10:03Z",
        "ended_at": "2024-05-06T09:11:03Z",
        "duration_s": 63,
        "billsec": 60,
        "disposition": "answered",
        "trunk_id": "trk_a",
        "cost": 0.125,
    }
    r = await api.get(f"/tenants/{t['id']}/calls", boss, params={"limit": 1, "offset": 1})
    assert r.json()["total"] == 3 and [c["id"] for c in r.json()["items"]] == [ids[2]]


async def test_one_call_with_its_explain_trace(api: Api) -> None:
    t, other, boss = await _tenants(api)
    mine, theirs = await insert(
        api, cdr(t, 0, direction="outbound", explain=EXPLAIN), cdr(other, 0)
    )
    r = await api.get(f"/tenants/{t['id']}/calls/{mine}", boss)
    assert r.status_code == 200, r.text
    assert r.json()["explain"] == EXPLAIN and r.json()["from"] == "101"
    # another tenant's CDR: 404 through this tenant, and through the other for its admin
    for path in (f"/tenants/{t['id']}/calls/{theirs}", f"/tenants/{other['id']}/calls/{theirs}"):
        r = await api.get(path, boss)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    assert (await api.get(f"/tenants/{other['id']}/calls", boss)).status_code == 404
    # its operator reads both
    assert (await api.get(f"/tenants/{other['id']}/calls/{theirs}")).status_code == 200
    assert (await api.get(f"/tenants/{t['id']}/calls/{theirs}")).status_code == 404


async def test_filters(api: Api) -> None:
    t, _other, boss = await _tenants(api)
    ids = await insert(
        api,
        cdr(t, 0, extension="101", disposition="answered"),
        cdr(t, 1, extension="102", disposition="busy", billsec=0),
        cdr(t, 2, extension="101", direction="outbound", disposition="no_answer"),
        cdr(t, 3, extension="103", direction="inbound", disposition="answered"),
    )

    async def found(**params: str) -> list[str]:
        r = await api.get(f"/tenants/{t['id']}/calls", boss, params=params)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["items"])
        return [c["id"] for c in r.json()["items"]]

    assert await found(extension="101") == [ids[2], ids[0]]
    assert await found(disposition="answered") == [ids[3], ids[0]]
    assert await found(direction="internal") == [ids[1], ids[0]]
    assert await found(direction="outbound", extension="101") == [ids[2]]
    # from is inclusive, to exclusive; any offset is understood
    assert await found(**{"from": "2024-05-06T09:01:00Z"}) == [ids[3], ids[2], ids[1]]
    assert await found(to="2024-05-06T09:02:00Z") == [ids[1], ids[0]]
    assert await found(
        **{"from": "2024-05-06T12:01:00+03:00", "to": "2024-05-06T12:03:00+03:00"}
    ) == [
        ids[2],
        ids[1],
    ]
    assert await found(extension="999") == []


async def test_bad_filters_are_422_naming_the_field(api: Api) -> None:
    t, _other, boss = await _tenants(api)
    for params, field in (
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-13-01T00:00:00Z"}, "to"),
        ({"from": "2024-05-06T09:00:00"}, "from"),  # no time zone: ambiguous
        ({"from": "2024-05-06T10:00:00Z", "to": "2024-05-06T09:00:00Z"}, "to"),
        ({"direction": "sideways"}, "direction"),
        ({"disposition": "lost"}, "disposition"),
        ({"limit": "5000"}, "limit"),
    ):
        r = await api.get(f"/tenants/{t['id']}/calls", boss, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["details"]["field"] == field, params


async def test_stats_per_extension_and_per_day_in_the_tenant_time_zone(api: Api) -> None:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme", time_zone="Europe/Moscow")
    other = await api.tenant(op["id"], "beta")
    # T0 + 0 and + 30 min are one Moscow day; + 22 h crosses Moscow midnight (UTC+3)
    await insert(
        api,
        cdr(t, 0),
        cdr(t, 30, extension="102", disposition="no_answer", billsec=0),
        cdr(t, 22 * 60, disposition="busy", billsec=0),
        cdr(other, 5),  # another tenant's call counts nowhere here
    )
    start = (T0 - timedelta(days=1)).isoformat()
    end = (T0 + timedelta(days=2)).isoformat()
    r = await api.get(f"/tenants/{t['id']}/stats", params={"from": start, "to": end})
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["time_zone"] == "Europe/Moscow"
    assert stats["total"] == {"calls": 3, "answered": 1, "missed": 2, "billsec": 60}
    assert stats["extensions"] == [
        {"extension": "101", "calls": 2, "answered": 1, "missed": 1, "billsec": 60},
        {"extension": "102", "calls": 1, "answered": 0, "missed": 1, "billsec": 0},
    ]
    day = (T0 + timedelta(hours=3)).date()
    assert [d["date"] for d in stats["days"]] == [
        day.isoformat(),
        (day + timedelta(days=1)).isoformat(),
    ]
    r = await api.get(f"/tenants/{t['id']}/stats", params={"from": end, "to": start})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "to"
    r = await api.get(
        f"/tenants/{t['id']}/stats",
        params={"from": start, "to": (T0 + timedelta(days=400)).isoformat()},
    )
    assert r.status_code == 422
    r = await api.get(f"/tenants/{t['id']}/stats", params={"from": "yesterday"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "from"
    r = await api.get("/tenants/ten_nope/stats")
    assert r.status_code == 404
