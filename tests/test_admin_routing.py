"""Trunks, route tables, routes, explain, dial plans and normalize through the API, on both
stores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from pbxcore.tenancy import models as m
from pbxcore.tenancy.store import Change
from tests.api_fixtures import Api

PASSWORD = "carrier-secret-Xy7!"


def trunk_body(name: str = "carrier", **fields: Any) -> dict[str, Any]:
    return {"name": name, "host": "sip.carrier.example"} | fields


async def audit_text(api: Api) -> str:
    async with api.ctx.db.session() as session:
        rows = (await session.scalars(select(m.AuditEntry))).all()
        return json.dumps([[r.entity, r.action, r.before, r.after] for r in rows])


async def stored_trunk(api: Api, trunk_id: str) -> m.Trunk:
    async with api.ctx.db.session() as session:
        row = await session.get(m.Trunk, trunk_id)
        assert row is not None
        return row


def field_of(r: Any) -> str:
    field: str = r.json()["error"]["details"]["field"]
    return field


async def test_trunk_crud_and_password_never_shown(api: Api) -> None:
    op = (await api.operator())["id"]
    base = f"/operators/{op}/trunks"
    responses = []
    r = await api.post(
        base,
        json=trunk_body(
            auth={"username": "acct1", "password": PASSWORD},
            register=True,
            inbound_ips=["192.0.2.10", "198.51.100.0/24"],
            number_format="e164_digits",
            caller_id={"mode": "fixed", "fixed_number": "+74951234567"},
            max_channels=30,
            rate_per_minute=0.015,
        ),
    )
    responses.append(r)
    assert r.status_code == 201, r.text
    trunk = r.json()
    assert trunk["auth"] == {"username": "acct1"}
    assert trunk["inbound_ips"] == ["192.0.2.10/32", "198.51.100.0/24"]
    assert trunk["caller_id"]["mode"] == "fixed"
    assert trunk["caller_id"]["fixed_number"] == "+74951234567"
    assert trunk["rate_per_minute"] == 0.015 and trunk["port"] == 5060
    assert trunk["transport"] == "udp" and trunk["register"] is True
    # stored encrypted with the node's key, recoverable for REGISTER
    row = await stored_trunk(api, trunk["id"])
    assert row.auth_password is not None and PASSWORD.encode() not in row.auth_password
    assert api.ctx.secrets.decrypt(row.auth_password) == PASSWORD

    responses.append(await api.get(f"{base}/{trunk['id']}"))
    responses.append(await api.get(base))
    assert responses[-1].json()["total"] == 1
    # a username change without a password keeps the stored password
    r = await api.patch(f"{base}/{trunk['id']}", json={"auth": {"username": "acct2"}, "port": 5080})
    responses.append(r)
    assert r.status_code == 200 and r.json()["auth"] == {"username": "acct2"}
    assert r.json()["port"] == 5080
    row = await stored_trunk(api, trunk["id"])
    assert row.auth_password is not None
    assert api.ctx.secrets.decrypt(row.auth_password) == PASSWORD
    # a new password replaces it
    r = await api.patch(
        f"{base}/{trunk['id']}", json={"auth": {"username": "acct2", "password": "second-pw"}}
    )
    responses.append(r)
    row = await stored_trunk(api, trunk["id"])
    assert row.auth_password is not None
    assert api.ctx.secrets.decrypt(row.auth_password) == "second-pw"
    # IP trust: auth null clears both (registering needs auth, so register goes off too)
    r = await api.patch(f"{base}/{trunk['id']}", json={"auth": None})
    assert r.status_code == 422 and field_of(r) == "register"
    r = await api.patch(f"{base}/{trunk['id']}", json={"auth": None, "register": False})
    responses.append(r)
    assert r.status_code == 200 and r.json()["auth"] is None
    row = await stored_trunk(api, trunk["id"])
    assert row.auth_username is None and row.auth_password is None

    for resp in responses:
        assert PASSWORD not in resp.text and "second-pw" not in resp.text
    text = await audit_text(api)
    assert '"trunk"' in text
    assert PASSWORD not in text and "second-pw" not in text
    assert (await api.delete(f"{base}/{trunk['id']}")).status_code == 204
    assert (await api.get(f"{base}/{trunk['id']}")).status_code == 404


async def test_trunk_validation_names_fields(api: Api) -> None:
    op = (await api.operator())["id"]
    base = f"/operators/{op}/trunks"
    await api.create(base, trunk_body())
    for bad, field in (
        ({"host": "not a host"}, "host"),
        ({"port": 0}, "port"),
        ({"transport": "sctp"}, "transport"),
        ({"inbound_ips": ["192.0.2.300"]}, "inbound_ips.0"),
        ({"number_format": "local"}, "number_format"),
        ({"caller_id": {"mode": "fixed"}}, "caller_id"),
        ({"caller_id": {"mode": "always"}}, "caller_id.mode"),
        ({"caller_id": {"mode": "fixed", "fixed_number": "12345"}}, "caller_id.fixed_number"),
        ({"register": True}, "register"),
        ({"auth": {"username": "u"}}, "auth.password"),
        ({"max_channels": 0}, "max_channels"),
        ({"rate_per_minute": -1}, "rate_per_minute"),
        ({"colour": "red"}, "colour"),
    ):
        r = await api.post(base, json=trunk_body("other") | bad)
        assert r.status_code == 422, (bad, r.text)
        assert field_of(r) == field, (bad, r.json())
    r = await api.post(base, json=trunk_body())
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    assert field_of(r) == "name"
    ok = await api.create(base, trunk_body("v6", host="2001:DB8::1", transport="tls", port=5061))
    assert ok["host"] == "2001:db8::1"


async def test_trunk_in_use_by_route_or_tenant(api: Api) -> None:
    op = (await api.operator())["id"]
    trunk = await api.create(f"/operators/{op}/trunks", trunk_body())
    rt = await api.create(f"/operators/{op}/route-tables", {"name": "default"})
    route = await api.create(
        f"/operators/{op}/route-tables/{rt['id']}/routes", {"prefix": "7", "trunk_id": trunk["id"]}
    )
    r = await api.delete(f"/operators/{op}/trunks/{trunk['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    await api.delete(f"/operators/{op}/route-tables/{rt['id']}/routes/{route['id']}")
    tenant = await api.tenant(op, "acme", dedicated_trunk_id=trunk["id"])
    r = await api.delete(f"/operators/{op}/trunks/{trunk['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    assert r.json()["error"]["details"]["tenant_id"] == tenant["id"]
    await api.patch(f"/operators/{op}/tenants/{tenant['id']}", json={"dedicated_trunk_id": None})
    assert (await api.delete(f"/operators/{op}/trunks/{trunk['id']}")).status_code == 204


async def test_route_tables_and_routes(api: Api) -> None:
    op = (await api.operator())["id"]
    other_op = (await api.operator("other.example"))["id"]
    foreign = await api.create(f"/operators/{other_op}/trunks", trunk_body())
    trunk = await api.create(f"/operators/{op}/trunks", trunk_body())
    rt = await api.create(f"/operators/{op}/route-tables", {"name": "retail"})
    r = await api.post(f"/operators/{op}/route-tables", json={"name": "retail"})
    assert r.status_code == 409 and field_of(r) == "name"
    routes = f"/operators/{op}/route-tables/{rt['id']}/routes"
    route = await api.create(
        routes,
        {"prefix": "7495", "trunk_id": trunk["id"], "priority": 2, "cost_per_minute": 0.01},
    )
    assert route["route_table_id"] == rt["id"] and route["cost_per_minute"] == 0.01
    assert route["weight"] == 1 and route["enabled"] is True
    default = await api.create(routes, {"prefix": "", "trunk_id": trunk["id"]})
    assert default["prefix"] == ""
    for bad, field in (
        ({"prefix": "+7", "trunk_id": trunk["id"]}, "prefix"),
        ({"prefix": "7a", "trunk_id": trunk["id"]}, "prefix"),
        ({"prefix": "7", "trunk_id": foreign["id"]}, "trunk_id"),
        ({"prefix": "7", "trunk_id": "trk_nope"}, "trunk_id"),
        ({"prefix": "7", "trunk_id": trunk["id"], "weight": -1}, "weight"),
        ({"prefix": "7", "trunk_id": trunk["id"], "cost_per_minute": "x"}, "cost_per_minute"),
    ):
        r = await api.post(routes, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert field_of(r) == field, (bad, r.json())
    r = await api.patch(f"{routes}/{route['id']}", json={"trunk_id": foreign["id"]})
    assert r.status_code == 422 and field_of(r) == "trunk_id"
    r = await api.patch(f"{routes}/{route['id']}", json={"priority": 1, "enabled": False})
    assert r.status_code == 200 and r.json()["priority"] == 1 and r.json()["enabled"] is False
    listed = (await api.get(routes)).json()
    assert [x["prefix"] for x in listed["items"]] == ["", "7495"] and listed["total"] == 2
    # a route of this table is not reachable under another table
    rt2 = await api.create(f"/operators/{op}/route-tables", {"name": "wholesale"})
    r = await api.get(f"/operators/{op}/route-tables/{rt2['id']}/routes/{route['id']}")
    assert r.status_code == 404
    r = await api.patch(f"/operators/{op}/route-tables/{rt['id']}", json={"name": "wholesale"})
    assert r.status_code == 409
    r = await api.patch(f"/operators/{op}/route-tables/{rt['id']}", json={"name": "retail-2"})
    assert r.status_code == 200 and r.json()["name"] == "retail-2"
    # a tenant's route table stays
    tenant = await api.tenant(op, "acme", route_table_id=rt["id"])
    r = await api.delete(f"/operators/{op}/route-tables/{rt['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    await api.patch(f"/operators/{op}/tenants/{tenant['id']}", json={"route_table_id": None})
    assert (await api.delete(f"/operators/{op}/route-tables/{rt['id']}")).status_code == 204
    assert (await api.get(routes)).status_code == 404
    # the routes went with the table: the trunk is free to go
    assert (await api.delete(f"/operators/{op}/trunks/{trunk['id']}")).status_code == 204


async def test_explain_orders_candidates_and_says_why(api: Api) -> None:
    op = (await api.operator())["id"]
    trunks = f"/operators/{op}/trunks"
    a = await api.create(trunks, trunk_body("a"))
    b = await api.create(trunks, trunk_body("b"))
    c = await api.create(trunks, trunk_body("c", enabled=False))
    rt = await api.create(f"/operators/{op}/route-tables", {"name": "lcr"})
    routes = f"/operators/{op}/route-tables/{rt['id']}/routes"
    for prefix, trunk, priority in (
        ("7495", a, 1),
        ("7495", b, 2),
        ("7", c, 1),
        ("", b, 5),
    ):
        await api.create(routes, {"prefix": prefix, "trunk_id": trunk["id"], "priority": priority})
    explain = f"/operators/{op}/route-tables/{rt['id']}/explain"
    r = await api.post(explain, json={"number": "+74951234567"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["candidates"] == [a["id"], b["id"]]
    assert answer["down"] == [c["id"]] and answer["route_table_id"] == rt["id"]
    assert [p["prefix"] for p in answer["prefixes"]] == ["7495", "7", ""]
    assert answer["prefixes"][0] == {
        "prefix": "7495",
        "used": True,
        "reason": "longest matching prefix",
    }
    steps = {(s["prefix"], s["trunk_name"]): s for s in answer["steps"]}
    assert steps[("7495", "a")]["decision"] == "candidate"
    assert steps[("7495", "a")]["position"] == 1
    assert steps[("7495", "b")]["position"] == 2
    assert steps[("7", "c")]["decision"] == "skipped"
    assert steps[("7", "c")]["reason"] == "trunk is disabled"
    assert steps[("", "b")]["reason"] == "trunk already listed from a longer prefix"
    # digits without '+' are the same number; an unrouted prefix falls to the default
    r = await api.post(explain, json={"number": "4930123456"})
    assert r.status_code == 200 and r.json()["candidates"] == [b["id"]]
    assert r.json()["number"] == "+4930123456"
    for bad in ("abc", "+0123", "", "+7495123456789012"):
        r = await api.post(explain, json={"number": bad})
        assert r.status_code == 422, bad
        assert field_of(r) == "number"
    # an empty table explains, with no candidates
    empty = await api.create(f"/operators/{op}/route-tables", {"name": "empty"})
    r = await api.post(
        f"/operators/{op}/route-tables/{empty['id']}/explain", json={"number": "+74951234567"}
    )
    assert r.status_code == 200 and r.json()["candidates"] == []


async def test_dial_plans_and_normalize(api: Api) -> None:
    op = (await api.operator())["id"]
    base = f"/operators/{op}/dial-plans"
    plan = await api.create(
        base,
        {
            "name": "moscow",
            "country": "ru",
            "default_area_code": "495",
            "extension_digits": 3,
            "rules": [
                {"match": r"9(\d{10})", "replace": r"+7\1", "description": "9 and 10 digits"}
            ],
        },
    )
    assert plan["country"] == "RU" and plan["rules"][0]["description"] == "9 and 10 digits"
    normalize = f"{base}/{plan['id']}/normalize"
    for dialed, e164, kind, rule in (
        ("9 495 123-45", None, None, None),  # 9 digits: no rule matches
        ("94951234567", "+74951234567", "national", "9 and 10 digits"),
        ("8 (495) 123-45-67", "+74951234567", "national", "8 and 10 digits"),
        ("810 49 30 1234567", "+49301234567", "international", "8 10 and an international number"),
        ("1234567", "+74951234567", "national", "local number in area code 495"),
        ("112", "112", "emergency", "emergency number"),
        ("201", "201", "internal", "extension (3 digits)"),
    ):
        r = await api.post(normalize, json={"number": dialed})
        assert r.status_code == 200, r.text
        got = r.json()
        if e164 is None:
            assert got["kind"] == "invalid" and got["e164"] is None and got["reason"]
        else:
            assert (got["e164"], got["kind"], got["rule"]) == (e164, kind, rule), dialed
    for bad, field in (
        ({"rules": [{"match": "(", "replace": ""}]}, "rules"),
        ({"rules": [{"match": r"(\d)", "replace": r"\2"}]}, "rules"),
        ({"rules": [{"match": "1", "replace": "1", "kind": "local"}]}, "rules.0.kind"),
        ({"country": "XX"}, "country"),
        ({"country": "RUS"}, "country"),
        ({"default_area_code": "49"}, "default_area_code"),
        ({"default_area_code": "4a"}, "default_area_code"),
        ({"extension_digits": 12}, "extension_digits"),
    ):
        r = await api.post(base, json={"name": "bad"} | bad)
        assert r.status_code == 422, (bad, r.text)
        assert field_of(r) == field, (bad, r.json())
    r = await api.post(normalize, json={"number": ""})
    assert r.status_code == 422 and field_of(r) == "number"
    r = await api.post(base, json={"name": "moscow"})
    assert r.status_code == 409 and field_of(r) == "name"
    # a PATCH is checked against what the plan becomes, and a refused one changes nothing
    r = await api.patch(f"{base}/{plan['id']}", json={"rules": [{"match": "[", "replace": ""}]})
    assert r.status_code == 422 and field_of(r) == "rules"
    r = await api.patch(f"{base}/{plan['id']}", json={"default_area_code": "4951"})
    assert r.status_code == 200 and r.json()["default_area_code"] == "4951"
    r = await api.post(normalize, json={"number": "123456"})
    assert r.json()["e164"] == "+74951123456"
    assert (await api.get(f"{base}/{plan['id']}")).json()["rules"] == plan["rules"]
    r = await api.patch(f"{base}/{plan['id']}", json={"country": "DE"})
    assert r.status_code == 200
    r = await api.post(normalize, json={"number": "0049301234567"})
    assert r.json()["e164"] == "+49301234567"
    assert (await api.get(base)).json()["total"] == 1


async def test_dial_plan_in_use(api: Api) -> None:
    op = (await api.operator())["id"]
    base = f"/operators/{op}/dial-plans"
    plan = await api.create(base, {"name": "p"})
    tenant = await api.tenant(op, "acme", dial_plan_id=plan["id"])
    r = await api.delete(f"{base}/{plan['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    await api.patch(f"/operators/{op}/tenants/{tenant['id']}", json={"dial_plan_id": None})
    await api.create(
        f"/tenants/{tenant['id']}/extensions", {"number": "101", "dial_plan_id": plan["id"]}
    )
    r = await api.delete(f"{base}/{plan['id']}")
    assert r.status_code == 409 and r.json()["error"]["details"]["extensions"] == 1
    other = (await api.operator("other.example"))["id"]
    r = await api.delete(f"/operators/{other}/dial-plans/{plan['id']}")
    assert r.status_code == 404


async def test_another_operators_admin_gets_404(api: Api) -> None:
    a = (await api.operator("a.example"))["id"]
    b = (await api.operator("b.example"))["id"]
    trunk = await api.create(f"/operators/{a}/trunks", trunk_body())
    rt = await api.create(f"/operators/{a}/route-tables", {"name": "rt"})
    dp = await api.create(f"/operators/{a}/dial-plans", {"name": "dp"})
    await api.create(f"/operators/{b}/admins", {"username": "bob", "password": "bob-pass-12"})
    bob = await api.login("bob", "bob-pass-12")
    tenant = await api.tenant(a, "acme")
    boss = await api.create(
        f"/tenants/{tenant['id']}/admins",
        {"username": "boss", "email": "boss@acme.example", "password": "boss-pass-1"},
    )
    boss_h = await api.login(boss["login"], "boss-pass-1")
    for who in (bob, boss_h):
        for method, path, body in (
            ("GET", f"/operators/{a}/trunks", None),
            ("GET", f"/operators/{a}/trunks/{trunk['id']}", None),
            ("PATCH", f"/operators/{a}/trunks/{trunk['id']}", {"port": 5062}),
            ("DELETE", f"/operators/{a}/trunks/{trunk['id']}", None),
            ("POST", f"/operators/{a}/trunks", trunk_body("x")),
            ("GET", f"/operators/{a}/route-tables/{rt['id']}/routes", None),
            ("POST", f"/operators/{a}/route-tables/{rt['id']}/explain", {"number": "+74951234567"}),
            ("POST", f"/operators/{a}/dial-plans/{dp['id']}/normalize", {"number": "101"}),
            ("DELETE", f"/operators/{a}/dial-plans/{dp['id']}", None),
        ):
            r = await api.request(method, path, who, json=body)
            assert r.status_code == 404, (method, path, r.text)
    # bob's own operator does not see a's objects under its id either
    r = await api.get(f"/operators/{b}/trunks/{trunk['id']}", bob)
    assert r.status_code == 404
    assert (await api.get(f"/operators/{b}/trunks", bob)).json()["total"] == 0


class RecordingSink:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def changed(self, changes: Sequence[Change]) -> None:
        self.changes.extend(changes)

    async def applied(self) -> None:
        return None


async def test_writes_reach_the_change_sink_and_the_audit_log(api: Api) -> None:
    sink = RecordingSink()
    api.ctx.sink = sink
    op = (await api.operator())["id"]
    trunk = await api.create(f"/operators/{op}/trunks", trunk_body())
    rt = await api.create(f"/operators/{op}/route-tables", {"name": "rt"})
    await api.create(
        f"/operators/{op}/route-tables/{rt['id']}/routes", {"prefix": "", "trunk_id": trunk["id"]}
    )
    await api.create(f"/operators/{op}/dial-plans", {"name": "dp"})
    await api.post(
        f"/operators/{op}/numbers:bulk", json={"from": "+74951000000", "to": "+74951000009"}
    )
    t = await api.tenant(op, "acme")
    did = (await api.get(f"/operators/{op}/numbers", params={"limit": 1})).json()["items"][0]
    await api.patch(f"/operators/{op}/numbers/{did['id']}", json={"tenant_id": t["id"]})
    kinds = [c.kind for c in sink.changes if c.operator_id == op]
    assert kinds == [
        "operator",
        "trunks",
        "routes",
        "routes",
        "dial_plans",
        "dids",
        "tenant",
        "dids",
    ]
    assert sink.changes[-1].tenant_id == t["id"]
    # a refused write reports nothing
    before = len(sink.changes)
    r = await api.post(f"/operators/{op}/trunks", json=trunk_body())
    assert r.status_code == 409 and len(sink.changes) == before
    text = await audit_text(api)
    for entity in ('"trunk"', '"route_table"', '"route"', '"dial_plan"', '"number_range"'):
        assert entity in text
    assert (await api.get("/openapi.json")).status_code == 200


async def test_trunk_status_reports_the_live_state(api: Api) -> None:
    op = await api.operator()
    t = await api.create(f"/operators/{op['id']}/trunks", trunk_body())
    r = await api.get(f"/operators/{op['id']}/trunks/{t['id']}/status")
    assert r.status_code == 200, r.text
    assert r.json()["active_channels"] == 0 and r.json()["state"] == "not_registering"
    live = {"state": "registered", "expires_in": 55, "last_status": 200, "active_channels": 3}
    api.ctx.trunk_status = lambda trunk_id: live if trunk_id == t["id"] else {}
    r = await api.get(f"/operators/{op['id']}/trunks/{t['id']}/status")
    assert r.json() | {"trunk_id": None} == {
        "trunk_id": None,
        "register": False,
        "state": "registered",
        "expires_in": 55,
        "last_status": 200,
        "last_error": None,
        "active_channels": 3,
    }
    other = await api.operator(domain="other.example.net")
    r = await api.get(f"/operators/{other['id']}/trunks/{t['id']}/status")
    assert r.status_code == 404
