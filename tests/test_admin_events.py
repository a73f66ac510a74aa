"""``GET /api/v1/operators/{op}/events``: an operator's own events only (404 for another
operator's id), the filters, and random query parameters (never a 5xx; a 422 names the
parameter; what a 200 lists matches every filter). Plus ``/ready`` and ``/health`` of a
bare app (the database check alone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pbxcore.pbx.events import EVENT_TYPES, Event, EventWriter
from tests.api_fixtures import Api

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def world(api: Api) -> dict[str, Any]:
    """Two operators with a tenant each, their admins, and events of both."""
    out: dict[str, Any] = {}
    writer = EventWriter(api.ctx.db, node_id="test", flush_interval=0)
    for i in (1, 2):
        op = await api.operator(domain=f"op{i}.example.net", name=f"Operator {i}")
        t = await api.tenant(op["id"], slug=f"acme{i}")
        await api.create(
            f"/operators/{op['id']}/admins", {"username": f"opadm{i}", "password": "op-pw-12345"}
        )
        out[f"op{i}"], out[f"t{i}"] = op["id"], t["id"]
        out[f"admin{i}"] = await api.login(f"opadm{i}", "op-pw-12345")
        for n, kind in enumerate(("registration", "unregistration", "call_failed") * 2):
            writer.add(
                Event(
                    type=kind,  # type: ignore[arg-type]
                    operator_id=op["id"],
                    tenant_id=t["id"],
                    subject=f"sip:20{n}@acme{i}.op{i}.example.net",
                    status=404 if kind == "call_failed" else None,
                    at=T0 + timedelta(minutes=n),
                )
            )
        writer.add(
            Event(type="trunk_state", operator_id=op["id"], subject=f"trk{i}", at=T0, status=403)
        )
    writer.start()
    await writer.stop()
    return out


async def test_an_operator_sees_its_own_events_only(api: Api, world: dict[str, Any]) -> None:
    op1, op2 = world["op1"], world["op2"]
    r = await api.get(f"/operators/{op1}/events", world["admin1"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 7 and {e["operator_id"] for e in body["items"]} == {op1}
    ats = [e["at"] for e in body["items"]]
    assert ats == sorted(ats, reverse=True)  # newest first
    # another operator's id: 404, with or without filters; its tenant: nothing
    for query in ({}, {"type": "registration"}, {"tenant_id": world["t2"]}):
        r = await api.get(f"/operators/{op2}/events", world["admin1"], params=query)
        assert r.status_code == 404, r.text
    r = await api.get(
        f"/operators/{op1}/events", world["admin1"], params={"tenant_id": world["t2"]}
    )
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0}
    r = await api.get(f"/operators/{op1}/events", world["admin2"])
    assert r.status_code == 404
    r = await api.get(f"/operators/{op1}/events", headers={})
    assert r.status_code == 401


async def test_the_filters(api: Api, world: dict[str, Any]) -> None:
    base = f"/operators/{world['op1']}/events"
    r = await api.get(base, params={"type": "registration"})
    assert r.status_code == 200 and r.json()["total"] == 2
    r = await api.get(base, params={"type": "trunk_state"})
    [trunk] = r.json()["items"]
    assert trunk["subject"] == "trk1" and trunk["status"] == 403 and trunk["tenant_id"] is None
    r = await api.get(base, params={"since": (T0 + timedelta(minutes=4)).isoformat()})
    assert [e["subject"].split("@")[0] for e in r.json()["items"]] == ["sip:205", "sip:204"]
    r = await api.get(base, params={"since": "2026-12-01T12:03:00"})  # no zone: UTC
    assert r.json()["total"] == 3
    r = await api.get(base, params={"limit": 2, "offset": 1})
    assert r.json()["total"] == 7 and len(r.json()["items"]) == 2
    for bad, field in (
        ({"type": "nope"}, "type"),
        ({"limit": 0}, "limit"),
        ({"since": "x"}, "since"),
    ):
        r = await api.get(base, params=bad)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text


_junk = st.text(max_size=50)
_queries = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(EVENT_TYPES), _junk),
        "tenant_id": _junk,
        "since": st.one_of(
            st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(
                lambda d: d.isoformat()
            ),
            _junk,
        ),
        "limit": st.one_of(st.integers(-5, 1100), _junk),
        "offset": st.one_of(st.integers(-5, 10**8), _junk),
    },
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=_queries)
async def test_random_query_parameters_never_give_a_5xx(
    api: Api, world: dict[str, Any], query: dict[str, Any]
) -> None:
    r = await api.get(f"/operators/{world['op1']}/events", params=query)
    event(f"status {r.status_code}")
    assert r.status_code in (200, 422), (query, r.text)
    if r.status_code == 422:
        assert r.json()["error"]["details"]["field"] in query, (query, r.text)
        return
    body = r.json()
    assert len(body["items"]) <= int(query.get("limit", 50)) and body["total"] >= 0
    for item in body["items"]:
        assert item["operator_id"] == world["op1"]
        if "type" in query:
            assert item["type"] == query["type"]
        if "tenant_id" in query:
            assert item["tenant_id"] == query["tenant_id"]
        if "since" in query:
            since = datetime.fromisoformat(query["since"])
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            assert datetime.fromisoformat(item["at"]) >= since


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.dictionaries(st.text(min_size=1, max_size=10), _junk, max_size=3))
async def test_health_and_ready_ignore_any_query(api: Api, query: dict[str, str]) -> None:
    for path in ("/health", "/ready", "/api/v1/health", "/api/v1/ready"):
        r = await api.client.get(path, params=query)
        assert r.status_code == 200, (path, r.text)
    r = await api.client.get("/api/v1/ready")
    assert r.json() == {"status": "ready", "checks": {"database": "ok"}}
    r = await api.client.get("/metrics")  # a bare app has no server, so no metrics
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_a_tenant_id_with_a_nul_is_a_422_on_both_stores(
    api: Api, world: dict[str, Any]
) -> None:
    """PostgreSQL cannot compare text with NUL: the parameter is refused before the query."""
    r = await api.get(
        f"/operators/{world['op1']}/events", world["admin1"], params={"tenant_id": "\x00"}
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "tenant_id", r.text
