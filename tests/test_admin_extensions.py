"""Extensions through the API (tenant scope), on both stores: CRUD by each admin role,
the write-only SIP password kept as HA1, validation, scopes, suspension, max_extensions."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from pbxcore.tenancy import models as m
from tests.api_fixtures import Api

SIP_PASSWORD = "sip-secret-101"


async def _setup(api: Api, **tenant: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme", **tenant)
    return op, t


async def _operator_admin(
    api: Api, op: dict[str, Any], username: str = "opadmin"
) -> dict[str, str]:
    password = f"{username}-secret-pw"
    await api.create(f"/operators/{op['id']}/admins", {"username": username, "password": password})
    return await api.login(username, password)


async def _tenant_admin(api: Api, t: dict[str, Any], username: str = "boss") -> dict[str, str]:
    password = f"{username}-secret-pw"
    created = await api.create(
        f"/tenants/{t['id']}/admins",
        {"username": username, "email": f"{username}@acme.example", "password": password},
    )
    return await api.login(created["login"], password)


def _ha1(algorithm: str, number: str, realm: str, password: str) -> str:
    return hashlib.new(algorithm, f"{number}:{realm}:{password}".encode()).hexdigest()


async def _row(api: Api, ext_id: str) -> m.Extension:
    async with api.ctx.db.session() as session:
        row = (await session.scalars(select(m.Extension).where(m.Extension.id == ext_id))).one()
        return row


def _values_of(data: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in a JSON document."""
    if isinstance(data, list):
        return [v for item in data for v in _values_of(item, key)]
    if isinstance(data, dict):
        found = [data[key]] if key in data else []
        return found + [v for item in data.values() for v in _values_of(item, key)]
    return []


def _field(r: Any) -> str:
    assert r.status_code == 422, r.text
    field: str = r.json()["error"]["details"]["field"]
    return field


async def _crud(api: Api, t: dict[str, Any], who: dict[str, str]) -> None:
    base = f"/tenants/{t['id']}/extensions"
    created = await api.create(
        base,
        {
            "number": "101",
            "name": "Reception",
            "email": "desk@acme.example",
            "forwarding": {"no_answer": "102", "no_answer_seconds": 20, "busy": "+74951234567"},
        },
        who,
    )
    assert {"id", "created_at", "updated_at"} <= created.keys()
    assert created["tenant_id"] == t["id"] and created["number"] == "101"
    assert created["name"] == "Reception" and created["email"] == "desk@acme.example"
    assert created["forwarding"] == {
        "no_answer": "102",
        "no_answer_seconds": 20,
        "busy": "+74951234567",
    }
    assert created["enabled"] is True and created["has_sip_password"] is False
    assert created["dial_plan_id"] is None
    r = await api.get(f"{base}/{created['id']}", who)
    assert r.status_code == 200 and r.json() == created
    r = await api.patch(
        f"{base}/{created['id']}", who, json={"name": "Front desk", "enabled": False}
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["name"] == "Front desk" and changed["enabled"] is False
    assert changed["forwarding"] == created["forwarding"]  # untouched by the PATCH
    r = await api.patch(f"{base}/{created['id']}", who, json={"forwarding": None, "email": None})
    assert r.status_code == 200 and r.json()["forwarding"] == {} and r.json()["email"] is None
    assert (await api.get(f"{base}/{created['id']}", who)).json()["name"] == "Front desk"
    # list: {items, total}, ordered by number, paged
    for number in ("105", "103", "104", "102"):
        await api.create(base, {"number": number}, who)
    page = (await api.get(base, who)).json()
    assert page.keys() == {"items", "total"}
    assert page["total"] == 5
    assert [e["number"] for e in page["items"]] == ["101", "102", "103", "104", "105"]
    page = (await api.get(base, who, params={"limit": 2, "offset": 1})).json()
    assert page["total"] == 5 and [e["number"] for e in page["items"]] == ["102", "103"]
    page = (await api.get(base, who, params={"limit": 2, "offset": 4})).json()
    assert page["total"] == 5 and [e["number"] for e in page["items"]] == ["105"]
    page = (await api.get(base, who, params={"offset": 9})).json()
    assert page == {"items": [], "total": 5}
    assert _field(await api.get(base, who, params={"limit": 0})) == "limit"
    assert _field(await api.get(base, who, params={"offset": -1})) == "offset"
    # delete
    r = await api.delete(f"{base}/{created['id']}", who)
    assert r.status_code == 204
    assert (await api.get(f"{base}/{created['id']}", who)).status_code == 404
    assert (await api.delete(f"{base}/{created['id']}", who)).status_code == 404
    assert (await api.get(base, who)).json()["total"] == 4
    tenant = (await api.get(f"/operators/{t['operator_id']}/tenants/{t['id']}")).json()
    assert tenant["usage"]["extensions"] == 4


async def test_crud_as_platform_admin(api: Api) -> None:
    _op, t = await _setup(api)
    await _crud(api, t, api.admin)


async def test_crud_as_operator_admin(api: Api) -> None:
    op, t = await _setup(api)
    await _crud(api, t, await _operator_admin(api, op))


async def test_crud_as_tenant_admin(api: Api) -> None:
    _op, t = await _setup(api)
    await _crud(api, t, await _tenant_admin(api, t))


async def test_sip_password_is_write_only_and_kept_as_ha1(api: Api) -> None:
    _op, t = await _setup(api)
    boss = await _tenant_admin(api, t)
    base = f"/tenants/{t['id']}/extensions"
    realm = t["domain"]
    r = await api.post(base, boss, json={"number": "101", "sip_password": SIP_PASSWORD})
    assert r.status_code == 201, r.text
    ext = r.json()
    assert ext["has_sip_password"] is True
    bodies = [r.text]
    row = await _row(api, ext["id"])
    assert row.ha1_md5 == _ha1("md5", "101", realm, SIP_PASSWORD)
    assert row.ha1_sha256 == _ha1("sha256", "101", realm, SIP_PASSWORD)
    # a new password: new HA1s, still never shown
    r = await api.patch(f"{base}/{ext['id']}", boss, json={"sip_password": "another-sip-pw"})
    assert r.status_code == 200 and r.json()["has_sip_password"] is True
    bodies.append(r.text)
    row = await _row(api, ext["id"])
    assert row.ha1_md5 == _ha1("md5", "101", realm, "another-sip-pw")
    assert row.ha1_sha256 == _ha1("sha256", "101", realm, "another-sip-pw")
    # a new number with a new password: the HA1s hold the new username
    r = await api.patch(
        f"{base}/{ext['id']}", boss, json={"number": "201", "sip_password": "third-sip-pw"}
    )
    assert r.status_code == 200 and r.json()["number"] == "201"
    bodies.append(r.text)
    row = await _row(api, ext["id"])
    assert row.ha1_md5 == _ha1("md5", "201", realm, "third-sip-pw")
    assert row.ha1_sha256 == _ha1("sha256", "201", realm, "third-sip-pw")
    # a PATCH without it keeps it
    r = await api.patch(f"{base}/{ext['id']}", boss, json={"name": "Desk"})
    assert r.status_code == 200 and r.json()["has_sip_password"] is True
    assert (await _row(api, ext["id"])).ha1_md5 == row.ha1_md5
    bodies.append(r.text)
    bodies.append((await api.get(f"{base}/{ext['id']}", boss)).text)
    bodies.append((await api.get(base, boss)).text)
    r = await api.get(f"/tenants/{t['id']}/audit", boss, params={"entity": "extension"})
    assert r.status_code == 200
    entries = r.json()["items"]
    assert [e["action"] for e in entries] == ["update", "update", "update", "create"]
    assert entries[-1]["after"]["sip_password"] == "***"
    assert entries[-2]["after"]["sip_password"] == "***"
    assert "sip_password" not in entries[0]["after"]  # the name change did not set it
    bodies.append(r.text)
    bodies.append((await api.get(f"/operators/{t['operator_id']}/audit")).text)
    for body in bodies:
        assert all(value == "***" for value in _values_of(json.loads(body), "sip_password"))
        for secret in (SIP_PASSWORD, "another-sip-pw", "third-sip-pw", row.ha1_md5, "ha1"):
            assert secret is not None and secret not in body, (secret, body)


async def test_validation_names_the_field(api: Api) -> None:
    op, t = await _setup(api)
    other_op = await api.operator("other.example", "Other")
    async with api.ctx.db.session() as session:
        session.add(m.DialPlanRow(id="dp_other", operator_id=other_op["id"], name="Theirs"))
        session.add(m.DialPlanRow(id="dp_own", operator_id=op["id"], name="Ours"))
        await session.commit()
    base = f"/tenants/{t['id']}/extensions"
    for body, field in (
        ({"number": "10a"}, "number"),
        ({"number": "123456789"}, "number"),
        ({"number": "1"}, "number"),
        ({"number": "112"}, "number"),  # an emergency number everywhere
        ({"number": "911"}, "number"),
        ({"number": "١٠١"}, "number"),  # Arabic-Indic digits are not ASCII digits
        ({"number": 101}, "number"),
        ({}, "number"),
        ({"number": "101", "forwarding": {"busy": "nowhere"}}, "forwarding.busy"),
        ({"number": "101", "forwarding": {"unconditional": "+0123"}}, "forwarding.unconditional"),
        ({"number": "101", "forwarding": {"no_answer_seconds": 4}}, "forwarding.no_answer_seconds"),
        (
            {"number": "101", "forwarding": {"no_answer_seconds": 121}},
            "forwarding.no_answer_seconds",
        ),
        ({"number": "101", "forwarding": {"after": "102"}}, "forwarding.after"),
        ({"number": "101", "colour": "red"}, "colour"),
        ({"number": "101", "sip_password": "short"}, "sip_password"),
        ({"number": "101", "dial_plan_id": "dp_other"}, "dial_plan_id"),
        ({"number": "101", "dial_plan_id": "dp_nope"}, "dial_plan_id"),
        ({"number": "101", "email": "not-an-address"}, "email"),
        ({"number": "101", "name": "x" * 201}, "name"),
    ):
        r = await api.post(base, json=body)
        assert _field(r) == field, (body, r.text)
        assert r.json()["error"]["code"] == "validation_error"
    assert (await api.get(base)).json()["total"] == 0
    ext = await api.create(base, {"number": "101", "dial_plan_id": "dp_own"})
    assert ext["dial_plan_id"] == "dp_own"
    r = await api.post(base, json={"number": "101"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    assert r.json()["error"]["details"]["field"] == "number"
    # the same checks on PATCH
    path = f"{base}/{ext['id']}"
    for body, field in (
        ({"number": "10a"}, "number"),
        ({"dial_plan_id": "dp_other"}, "dial_plan_id"),
        ({"forwarding": {"no_answer_seconds": 500}}, "forwarding.no_answer_seconds"),
        ({"sip_password": "short"}, "sip_password"),
        ({"id": "ext_mine"}, "id"),
        ({"tenant_id": "ten_other"}, "tenant_id"),
        # the HA1 holds the number: a new number needs a new SIP password
        ({"number": "102"}, "sip_password"),
    ):
        r = await api.patch(path, json=body)
        assert _field(r) == field, (body, r.text)
    second = await api.create(base, {"number": "102", "sip_password": SIP_PASSWORD})
    r = await api.patch(path, json={"number": "102", "sip_password": SIP_PASSWORD})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate", r.text
    assert r.json()["error"]["details"]["field"] == "number"
    assert (await api.get(path)).json()["number"] == "101"
    assert (await api.get(f"{base}/{second['id']}")).json()["number"] == "102"


async def test_text_no_store_holds_is_refused_alike(api: Api) -> None:
    """NUL (PostgreSQL text cannot hold it) and lone surrogates (no UTF-8 for them): a 422
    naming the field on both stores, not a 500 on one; an id with NUL in a path is a 404."""
    _op, t = await _setup(api)
    base = f"/tenants/{t['id']}/extensions"
    ext = await api.create(base, {"number": "101"})
    json_headers = api.admin | {"content-type": "application/json"}
    for raw, field in (
        ('{"number": "102", "name": "a\\u0000b"}', "name"),
        ('{"number": "102", "name": "tab\\there"}', "name"),
        ('{"number": "102", "name": "\\ud800"}', "name"),
        ('{"number": "102", "dial_plan_id": "dp\\u0000"}', "dial_plan_id"),
        ('{"number": "102", "forwarding": {"busy": "10\\u0000"}}', "forwarding.busy"),
    ):
        r = await api.post(base, content=raw, headers=json_headers)
        assert _field(r) == field, (raw, r.text)
    for raw, field in (
        ('{"name": "a\\u0000b"}', "name"),
        ('{"name": "\\udfff"}', "name"),
        ('{"dial_plan_id": "\\u0000"}', "dial_plan_id"),
    ):
        r = await api.patch(f"{base}/{ext['id']}", content=raw, headers=json_headers)
        assert _field(r) == field, (raw, r.text)
    assert (await api.get(f"{base}/{ext['id']}")).json()["name"] == ""
    for path in (
        f"{base}/ext%00x",
        "/tenants/ten%00x/extensions",
        "/operators/op%00x/tenants",
    ):
        r = await api.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
    r = await api.delete(f"{base}/{ext['id']}%00")
    assert r.status_code == 404
    assert (await api.get(base)).json()["total"] == 1


async def test_outside_the_scope_is_404(api: Api) -> None:
    op, t = await _setup(api)
    other_t = await api.tenant(op["id"], "beta")
    other_op = await api.operator("other.example", "Other")
    far_t = await api.tenant(other_op["id"], "gamma")
    ext = await api.create(f"/tenants/{t['id']}/extensions", {"number": "101"})
    other_ext = await api.create(f"/tenants/{other_t['id']}/extensions", {"number": "101"})
    far_ext = await api.create(f"/tenants/{far_t['id']}/extensions", {"number": "101"})
    boss = await _tenant_admin(api, t)
    opadmin = await _operator_admin(api, op)

    async def refused(who: dict[str, str], tenant: str, ext_id: str, *, paths: bool) -> None:
        base = f"/tenants/{tenant}/extensions"
        answers = [
            await api.get(f"{base}/{ext_id}", who),
            await api.patch(f"{base}/{ext_id}", who, json={"name": "mine now"}),
            await api.delete(f"{base}/{ext_id}", who),
        ]
        if paths:  # the tenant itself is outside: its list and create too
            answers += [await api.get(base, who), await api.post(base, who, json={"number": "150"})]
        for r in answers:
            assert r.status_code == 404, (r.request.method, r.request.url, r.text)
            assert r.json()["error"]["code"] == "not_found"

    # another tenant's extension id under this tenant, for every role
    for who in (api.admin, opadmin, boss):
        await refused(who, t["id"], other_ext["id"], paths=False)
        await refused(who, t["id"], far_ext["id"], paths=False)
    # the tenant admin of A on B's paths, and on another operator's tenant
    await refused(boss, other_t["id"], other_ext["id"], paths=True)
    await refused(boss, far_t["id"], far_ext["id"], paths=True)
    # an operator admin on another operator's tenant, or on none
    await refused(opadmin, far_t["id"], far_ext["id"], paths=True)
    await refused(opadmin, "ten_nope", "ext_nope", paths=True)
    # nothing moved
    for tenant, e in ((t, ext), (other_t, other_ext), (far_t, far_ext)):
        r = await api.get(f"/tenants/{tenant['id']}/extensions")
        assert [x["id"] for x in r.json()["items"]] == [e["id"]]
        assert r.json()["items"][0]["name"] == ""
    # without a token: 401
    r = await api.get(f"/tenants/{t['id']}/extensions", {})
    assert r.status_code == 401


async def test_suspended_tenant_admin_reads_but_cannot_write(api: Api) -> None:
    op, t = await _setup(api)
    base = f"/tenants/{t['id']}/extensions"
    ext = await api.create(base, {"number": "101"})
    boss = await _tenant_admin(api, t)
    opadmin = await _operator_admin(api, op)
    r = await api.patch(f"/operators/{op['id']}/tenants/{t['id']}", json={"status": "suspended"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    for r in (
        await api.post(base, boss, json={"number": "102"}),
        await api.patch(f"{base}/{ext['id']}", boss, json={"name": "x"}),
        await api.delete(f"{base}/{ext['id']}", boss),
    ):
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "tenant_suspended"
    assert (await api.get(base, boss)).json()["total"] == 1
    r = await api.get(f"{base}/{ext['id']}", boss)
    assert r.status_code == 200 and r.json()["name"] == ""
    # its operator still writes
    for who in (opadmin, api.admin):
        created = await api.create(base, {"number": "102"}, who)
        r = await api.patch(f"{base}/{created['id']}", who, json={"name": "By operator"})
        assert r.status_code == 200
        assert (await api.delete(f"{base}/{created['id']}", who)).status_code == 204
    r = await api.patch(f"{base}/{ext['id']}", opadmin, json={"name": "Kept"})
    assert r.status_code == 200
    # active again: its admin writes again
    r = await api.patch(f"/operators/{op['id']}/tenants/{t['id']}", json={"status": "active"})
    assert r.status_code == 200
    r = await api.patch(f"{base}/{ext['id']}", boss, json={"name": "Mine"})
    assert r.status_code == 200 and r.json()["name"] == "Mine"


async def test_max_extensions_holds_under_concurrent_creates(api: Api) -> None:
    op, t = await _setup(api, limits={"max_extensions": 3})
    boss = await _tenant_admin(api, t)
    base = f"/tenants/{t['id']}/extensions"
    tenant_path = f"/operators/{op['id']}/tenants/{t['id']}"
    answers = await asyncio.gather(
        *(api.post(base, boss, json={"number": f"{100 + i}"}) for i in range(8))
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 3 + [409] * 5, [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "limit_reached"
            assert r.json()["error"]["details"] == {"limit": "max_extensions", "value": 3}
    listed = (await api.get(base, boss)).json()
    assert listed["total"] == 3
    created = sorted(r.json()["number"] for r in answers if r.status_code == 201)
    assert [e["number"] for e in listed["items"]] == created
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 3
    # still full, one at a time too
    r = await api.post(base, boss, json={"number": "200"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "limit_reached"
    # deleting one frees a slot, exactly one
    r = await api.delete(f"{base}/{listed['items'][0]['id']}", boss)
    assert r.status_code == 204
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 2
    answers = await asyncio.gather(
        *(api.post(base, boss, json={"number": f"{300 + i}"}) for i in range(4))
    )
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 3
    assert (await api.get(base, boss)).json()["total"] == 3
    # a refused duplicate does not take a slot
    await api.delete(f"{base}/{listed['items'][1]['id']}", boss)
    r = await api.post(base, boss, json={"number": listed["items"][2]["number"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 2
    await api.create(base, {"number": "400"}, boss)
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 3


async def test_concurrent_deletes_free_one_slot(api: Api) -> None:
    """Deletes racing on one extension: one 204, the rest 404, the usage moves once (it went
    negative, lifting max_extensions); a PATCH racing a delete is a 404, not a 500."""
    op, t = await _setup(api, limits={"max_extensions": 2})
    base = f"/tenants/{t['id']}/extensions"
    tenant_path = f"/operators/{op['id']}/tenants/{t['id']}"
    ext = await api.create(base, {"number": "101"})
    await api.create(base, {"number": "102"})
    answers = await asyncio.gather(*(api.delete(f"{base}/{ext['id']}") for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [204, 404, 404, 404]
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 1
    r = await api.get(f"/tenants/{t['id']}/audit", params={"action": "delete"})
    assert r.json()["total"] == 1
    answers = await asyncio.gather(
        *(api.post(base, json={"number": f"{120 + i}"}) for i in range(3))
    )
    assert sorted(r.status_code for r in answers) == [201, 409, 409]
    ext = next(r.json() for r in answers if r.status_code == 201)
    answers = await asyncio.gather(
        api.delete(f"{base}/{ext['id']}"),
        *(api.patch(f"{base}/{ext['id']}", json={"name": f"n{i}"}) for i in range(3)),
    )
    assert answers[0].status_code == 204
    for r in answers[1:]:
        assert r.status_code in (200, 404), r.text
    assert (await api.get(f"{base}/{ext['id']}")).status_code == 404
    assert (await api.get(tenant_path)).json()["usage"]["extensions"] == 1
    assert (await api.get(base)).json()["total"] == 1


async def test_concurrent_creates_of_one_number(api: Api) -> None:
    """Creates racing for one number pass the duplicate check together: one 201, the rest the
    same 409 as a sequential duplicate (naming the field), and no slot is taken by them."""
    op, t = await _setup(api)
    base = f"/tenants/{t['id']}/extensions"
    answers = await asyncio.gather(*(api.post(base, json={"number": "101"}) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5
    for r in answers:
        if r.status_code == 409:
            error = r.json()["error"]
            assert error["code"] == "duplicate" and error["details"]["field"] == "number", r.text
    tenant = (await api.get(f"/operators/{op['id']}/tenants/{t['id']}")).json()
    assert tenant["usage"]["extensions"] == 1
    assert (await api.get(base)).json()["total"] == 1


# Bodies near the valid ones (each field valid or anything), so that examples reach the
# store, and anything at all; texts include what no store holds (NUL, lone surrogates).
_text = st.text(max_size=20) | st.sampled_from(
    ["", "\x00", "a\x00b", "\ud800", "101", "+74951234567", "a@b.example"]
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | _text
)
_keys = _text | st.sampled_from(["number", "name", "forwarding", "busy", "no_answer_seconds"])
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=12,
)
_target = st.from_regex(r"\+?[0-9]{2,15}", fullmatch=True) | _json
_forwarding = st.fixed_dictionaries(
    {},
    optional={
        "unconditional": _target,
        "busy": _target,
        "no_answer": _target,
        "unavailable": _target,
        "no_answer_seconds": st.integers(0, 200) | _json,
    },
)
_near_valid = st.fixed_dictionaries(
    {"number": st.from_regex(r"[0-9]{2,8}", fullmatch=True) | _json},
    optional={
        "name": _text | _json,
        "email": st.sampled_from(["a@b.example", "x@acme.example"]) | _json,
        "sip_password": st.text(min_size=8, max_size=20) | _json,
        "dial_plan_id": st.none() | _text | _json,
        "forwarding": _forwarding | _json,
        "enabled": st.booleans() | _json,
    },
)
_bodies = _near_valid | _json


@pytest.fixture
async def roomy_tenant(api: Api) -> str:
    """A tenant that does not fill up during the examples (the fixture is made once)."""
    _op, t = await _setup(api, limits={"max_extensions": 100_000})
    tenant_id: str = t["id"]
    return tenant_id


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies)
async def test_random_bodies_never_give_a_5xx(api: Api, roomy_tenant: str, body: Any) -> None:
    r = await api.post(
        f"/tenants/{roomy_tenant}/extensions",
        content=json.dumps(body),
        headers=api.admin | {"content-type": "application/json"},
    )
    event(f"status {r.status_code}")
    assert r.status_code < 500, (body, r.text)
    if r.status_code == 201:
        assert r.json()["has_sip_password"] is (
            isinstance(body, dict) and body.get("sip_password") is not None
        )
        return
    assert 400 <= r.status_code < 500
    error = r.json()["error"]
    assert error.keys() == {"code", "message", "details"}, r.text
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert isinstance(error["details"], dict)
    if r.status_code == 422:
        assert isinstance(error["details"]["field"], str)
