"""The DID pool (ranges, assigning within max_dids) and a tenant's numbers, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pbxcore.tenancy.errors import ConflictError
from pbxcore.tenancy.store import Principal, Store
from tests.api_fixtures import Api


def field_of(r: Any) -> str:
    field: str = r.json()["error"]["details"]["field"]
    return field


async def pool_total(api: Api, op: str, **params: str) -> int:
    r = await api.get(f"/operators/{op}/numbers", params=params)
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


async def test_pool_add_list_and_filter(api: Api) -> None:
    op = (await api.operator())["id"]
    pool = f"/operators/{op}/numbers"
    did = await api.create(pool, {"number": "+74951230000"})
    assert did["status"] == "free" and did["tenant_id"] is None and did["destination"] is None
    r = await api.post(pool, json={"number": "+74951230000"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    assert field_of(r) == "number"
    for bad in ("74951230001", "+0495", "+7495123000012345", "+7495-123"):
        r = await api.post(pool, json={"number": bad})
        assert r.status_code == 422 and field_of(r) == "number", bad
    r = await api.post(f"{pool}:bulk", json={"from": "+74951230100", "to": "+74951230199"})
    assert r.status_code == 201, r.text
    assert r.json() == {"from": "+74951230100", "to": "+74951230199", "count": 100}
    assert await pool_total(api, op) == 101
    page = (await api.get(pool, params={"limit": 3, "offset": 1})).json()
    assert [x["number"] for x in page["items"]] == [
        "+74951230100",
        "+74951230101",
        "+74951230102",
    ]
    t = await api.tenant(op, "acme")
    r = await api.patch(f"{pool}/{did['id']}", json={"tenant_id": t["id"]})
    assert r.status_code == 200 and r.json()["status"] == "assigned"
    assert await pool_total(api, op, status="free") == 100
    assert await pool_total(api, op, status="assigned") == 1
    assert await pool_total(api, op, tenant_id=t["id"]) == 1
    r = await api.get(pool, params={"status": "taken"})
    assert r.status_code == 422 and field_of(r) == "status"
    got = (await api.get(f"{pool}/{did['id']}")).json()
    assert got["number"] == "+74951230000" and got["tenant_id"] == t["id"]
    # the colon path does not reach the one-number routes, nor they it
    assert (await api.get(f"{pool}:bulk")).status_code == 405
    assert (await api.get(f"{pool}/bulk")).status_code == 404


async def test_bulk_range_rules_and_all_or_nothing(api: Api) -> None:
    op = (await api.operator())["id"]
    other = (await api.operator("other.example"))["id"]
    bulk = f"/operators/{op}/numbers:bulk"
    for body, field in (
        ({"from": "+74950000000", "to": "+7495000000"}, "to"),  # lengths differ
        ({"from": "+74950000010", "to": "+74950000009"}, "to"),  # to below from
        ({"from": "+74950000000", "to": "+74950010000"}, "to"),  # 10,001 numbers
        ({"from": "74950000000", "to": "+74950000009"}, "from"),
        ({"from": "+74950000000"}, "to"),
    ):
        r = await api.post(bulk, json=body)
        assert r.status_code == 422, (body, r.text)
        assert field_of(r) == field, (body, r.json())
    r = await api.post(bulk, json={"from": "+74950000000", "to": "+74950009999"})
    assert r.status_code == 201 and r.json()["count"] == 10_000
    assert await pool_total(api, op) == 10_000
    # another operator's range that overlaps: refused whole, precise about what collides
    await api.create(f"/operators/{other}/numbers", {"number": "+74951000005"})
    r = await api.post(bulk, json={"from": "+74951000000", "to": "+74951000009"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "overlap"
    details = r.json()["error"]["details"]
    assert details["taken"] == 1 and details["first_taken"] == "+74951000005"
    assert details["field"] == "from"
    r = await api.post(bulk, json={"from": "+74950009990", "to": "+74950010009"})
    assert r.status_code == 409
    assert r.json()["error"]["details"]["taken"] == 10
    assert await pool_total(api, op) == 10_000  # nothing of the refused ranges was added
    # same digits, other length: no overlap
    r = await api.post(bulk, json={"from": "+7495000000", "to": "+7495000009"})
    assert r.status_code == 201 and r.json()["count"] == 10
    r = await api.post(bulk, json={"from": "+74959999999", "to": "+74959999999"})
    assert r.status_code == 201 and r.json()["count"] == 1


async def test_assign_release_and_limits(api: Api) -> None:
    op = (await api.operator())["id"]
    other = (await api.operator("other.example"))["id"]
    pool = f"/operators/{op}/numbers"
    await api.post(f"{pool}:bulk", json={"from": "+74951110000", "to": "+74951110003"})
    dids = (await api.get(pool)).json()["items"]
    t = await api.tenant(op, "acme", limits={"max_dids": 2})
    t2 = await api.tenant(op, "beta")
    foreign = await api.tenant(other, "gamma")
    for did in dids[:2]:
        r = await api.patch(f"{pool}/{did['id']}", json={"tenant_id": t["id"]})
        assert r.status_code == 200 and r.json()["tenant_id"] == t["id"]
    r = await api.patch(f"{pool}/{dids[2]['id']}", json={"tenant_id": t["id"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "limit_reached"
    assert r.json()["error"]["details"] == {"limit": "max_dids", "value": 2}
    assert (await api.get(f"{pool}/{dids[2]['id']}")).json()["status"] == "free"
    for tenant_id in (foreign["id"], "ten_nope"):
        r = await api.patch(f"{pool}/{dids[2]['id']}", json={"tenant_id": tenant_id})
        assert r.status_code == 422 and field_of(r) == "tenant_id"
    # assigned elsewhere: released first, never moved silently
    r = await api.patch(f"{pool}/{dids[0]['id']}", json={"tenant_id": t2["id"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "number_assigned"
    # assigning again to the same tenant changes nothing
    r = await api.patch(f"{pool}/{dids[0]['id']}", json={"tenant_id": t["id"]})
    assert r.status_code == 200
    usage = (await api.get(f"/operators/{op}/tenants/{t['id']}")).json()["usage"]
    assert usage["dids"] == 2
    # a destination goes with the release
    ext = await api.create(f"/tenants/{t['id']}/extensions", {"number": "101"})
    r = await api.patch(
        f"/tenants/{t['id']}/numbers/{dids[0]['id']}",
        json={"destination": {"type": "extension", "id": ext["id"]}},
    )
    assert r.status_code == 200
    r = await api.delete(f"{pool}/{dids[0]['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    r = await api.patch(f"{pool}/{dids[0]['id']}", json={"tenant_id": None})
    assert r.status_code == 200
    assert r.json()["status"] == "free" and r.json()["destination"] is None
    usage = (await api.get(f"/operators/{op}/tenants/{t['id']}")).json()["usage"]
    assert usage["dids"] == 1
    r = await api.patch(f"{pool}/{dids[2]['id']}", json={"tenant_id": t["id"]})
    assert r.status_code == 200  # room again
    # releasing a free number is a no-op; {} changes nothing
    assert (await api.patch(f"{pool}/{dids[0]['id']}", json={"tenant_id": None})).is_success
    assert (await api.patch(f"{pool}/{dids[0]['id']}", json={})).json()["status"] == "free"
    assert (await api.delete(f"{pool}/{dids[0]['id']}")).status_code == 204
    assert (await api.get(f"{pool}/{dids[0]['id']}")).status_code == 404
    # deleting a tenant returns its numbers to the pool
    assert (await api.delete(f"/operators/{op}/tenants/{t['id']}")).status_code == 204
    assert await pool_total(api, op, status="free") == 3


async def test_concurrent_assignment_one_wins(api: Api) -> None:
    op = (await api.operator())["id"]
    pool = f"/operators/{op}/numbers"
    did = await api.create(pool, {"number": "+74952220000"})
    a = await api.tenant(op, "alpha")
    b = await api.tenant(op, "beta")
    results = await asyncio.gather(
        api.patch(f"{pool}/{did['id']}", json={"tenant_id": a["id"]}),
        api.patch(f"{pool}/{did['id']}", json={"tenant_id": b["id"]}),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["error"]["code"] == "number_assigned"
    winner = next(r for r in results if r.status_code == 200).json()["tenant_id"]
    assert (await api.get(f"{pool}/{did['id']}")).json()["tenant_id"] == winner
    # the loser's counter moved back with its transaction
    counts = {
        t["id"]: (await api.get(f"/operators/{op}/tenants/{t['id']}")).json()["usage"]["dids"]
        for t in (a, b)
    }
    assert counts == {a["id"]: int(winner == a["id"]), b["id"]: int(winner == b["id"])}


async def test_assignment_race_is_decided_by_the_store(api: Api) -> None:
    """Both requests read the DID as free; the second to write loses at the conditional
    UPDATE (not at the read), and its counter move rolls back."""
    op = (await api.operator())["id"]
    did = await api.create(f"/operators/{op}/numbers", {"number": "+74952220001"})
    a = await api.tenant(op, "alpha")
    b = await api.tenant(op, "beta")
    async with api.ctx.db.session() as first, api.ctx.db.session() as second:
        store_a = Store(first, Principal.system("test-a"))
        store_b = Store(second, Principal.system("test-b"))
        scope_a, scope_b = await store_a.operator(op), await store_b.operator(op)
        row_a, row_b = await scope_a.numbers.get(did["id"]), await scope_b.numbers.get(did["id"])
        assert row_a.tenant_id is None and row_b.tenant_id is None
        await scope_a.set_number_tenant(row_a, a["id"])
        await store_a.commit()
        with pytest.raises(ConflictError) as lost:
            await scope_b.set_number_tenant(row_b, b["id"])
        assert lost.value.code == "number_assigned"
        await second.rollback()
    assert (await api.get(f"/operators/{op}/numbers/{did['id']}")).json()["tenant_id"] == a["id"]
    usage = (await api.get(f"/operators/{op}/tenants/{b['id']}")).json()["usage"]
    assert usage["dids"] == 0


async def test_tenant_numbers_and_destinations(api: Api) -> None:
    op = (await api.operator())["id"]
    pool = f"/operators/{op}/numbers"
    t = await api.tenant(op, "acme")
    t2 = await api.tenant(op, "beta")
    mine = await api.create(pool, {"number": "+74953330000"})
    theirs = await api.create(pool, {"number": "+74953330001"})
    await api.create(pool, {"number": "+74953330002"})  # free, nobody's
    await api.patch(f"{pool}/{mine['id']}", json={"tenant_id": t["id"]})
    await api.patch(f"{pool}/{theirs['id']}", json={"tenant_id": t2["id"]})
    ext = await api.create(f"/tenants/{t['id']}/extensions", {"number": "101"})
    other_ext = await api.create(f"/tenants/{t2['id']}/extensions", {"number": "101"})
    admin = await api.create(
        f"/tenants/{t['id']}/admins",
        {"username": "boss", "email": "boss@acme.example", "password": "boss-pass-1"},
    )
    boss = await api.login(admin["login"], "boss-pass-1")
    base = f"/tenants/{t['id']}/numbers"
    listed = (await api.get(base, boss)).json()
    assert listed["total"] == 1 and listed["items"][0]["number"] == "+74953330000"
    assert (await api.get(f"{base}/{mine['id']}", boss)).status_code == 200
    # another tenant's DID, another tenant's list: not found
    assert (await api.get(f"{base}/{theirs['id']}", boss)).status_code == 404
    assert (await api.get(f"/tenants/{t2['id']}/numbers", boss)).status_code == 404
    r = await api.patch(f"{base}/{theirs['id']}", boss, json={"destination": {"type": "hangup"}})
    assert r.status_code == 404
    assert (await api.get(f"/operators/{op}/numbers", boss)).status_code == 404
    for destination in (
        {"type": "extension", "id": ext["id"]},
        {"type": "voicemail", "id": ext["id"]},
        {"type": "external", "number": "+74957654321"},
        {"type": "hangup"},
    ):
        r = await api.patch(f"{base}/{mine['id']}", boss, json={"destination": destination})
        assert r.status_code == 200, r.text
        assert r.json()["destination"] == destination
    # an IVR needs the tenant's ivr feature (and an IVR of the tenant: tests/test_admin_ivrs)
    ivr = {"destination": {"type": "ivr", "id": "ivr_main"}}
    r = await api.patch(f"{base}/{mine['id']}", boss, json=ivr)
    assert r.status_code == 403 and r.json()["error"]["code"] == "feature_disabled", r.text
    for destination, field in (
        ({"type": "extension", "id": other_ext["id"]}, "destination"),
        ({"type": "extension", "id": "ext_nope"}, "destination"),
        ({"type": "extension"}, "destination"),
        ({"type": "external", "number": "8495"}, "destination"),
        ({"type": "hangup", "number": "+74957654321"}, "destination"),
        ({"type": "fax"}, "destination.type"),
        ({"type": "hangup", "colour": "red"}, "destination.colour"),
    ):
        r = await api.patch(f"{base}/{mine['id']}", boss, json={"destination": destination})
        assert r.status_code == 422, (destination, r.text)
        assert field_of(r) == field, (destination, r.json())
    got = (await api.get(f"{base}/{mine['id']}", boss)).json()
    assert got["destination"] == {"type": "hangup"}  # the refused ones changed nothing
    # the tenant admin cannot take or give numbers: tenant_id is not a tenant field
    r = await api.patch(f"{base}/{mine['id']}", boss, json={"tenant_id": None})
    assert r.status_code == 422
    r = await api.patch(f"{base}/{mine['id']}", json={"destination": None})
    assert r.status_code == 200 and r.json()["destination"] is None
    # a suspended tenant's admin reads but does not write; its operator still may
    await api.patch(f"/operators/{op}/tenants/{t['id']}", json={"status": "suspended"})
    assert (await api.get(base, boss)).status_code == 200
    r = await api.patch(f"{base}/{mine['id']}", boss, json={"destination": {"type": "hangup"}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_suspended"
    r = await api.patch(f"{base}/{mine['id']}", json={"destination": {"type": "hangup"}})
    assert r.status_code == 200


async def test_another_operators_admin_gets_404(api: Api) -> None:
    a = (await api.operator("a.example"))["id"]
    b = (await api.operator("b.example"))["id"]
    did = await api.create(f"/operators/{a}/numbers", {"number": "+74954440000"})
    t = await api.tenant(a, "acme")
    await api.patch(f"/operators/{a}/numbers/{did['id']}", json={"tenant_id": t["id"]})
    bt = await api.tenant(b, "bee")
    await api.create(f"/operators/{b}/admins", {"username": "bob", "password": "bob-pass-12"})
    bob = await api.login("bob", "bob-pass-12")
    for method, path, body in (
        ("GET", f"/operators/{a}/numbers", None),
        ("POST", f"/operators/{a}/numbers", {"number": "+74954440001"}),
        ("POST", f"/operators/{a}/numbers:bulk", {"from": "+74954440010", "to": "+74954440019"}),
        ("GET", f"/operators/{a}/numbers/{did['id']}", None),
        ("PATCH", f"/operators/{a}/numbers/{did['id']}", {"tenant_id": None}),
        ("DELETE", f"/operators/{a}/numbers/{did['id']}", None),
        ("GET", f"/tenants/{t['id']}/numbers", None),
        ("GET", f"/tenants/{t['id']}/numbers/{did['id']}", None),
        ("PATCH", f"/tenants/{t['id']}/numbers/{did['id']}", {"destination": None}),
        # under bob's own operator, a's DID is not there either
        ("GET", f"/operators/{b}/numbers/{did['id']}", None),
        ("PATCH", f"/operators/{b}/numbers/{did['id']}", {"tenant_id": bt["id"]}),
    ):
        r = await api.request(method, path, bob, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert await pool_total(api, a) == 1
