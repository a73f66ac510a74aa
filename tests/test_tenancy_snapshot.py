"""Config snapshots: changes made through the API or the store reach the snapshot, part by
part, and a full rebuild agrees with the incremental one. Both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.sip.credentials import FileCredentialStore
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.snapshot import (
    Snapshot,
    SnapshotCredentialStore,
    SnapshotService,
    build_snapshot,
)
from pbxcore.tenancy.store import Change, Principal, Store
from tests.api_fixtures import Api
from tests.helpers import digest_ha1

REALM = "acme.voip.example.net"


@pytest.fixture
async def snap(api: Api) -> AsyncIterator[SnapshotService]:
    service = SnapshotService(api.ctx.db, debounce=0.001, retry=0.01)
    await service.load()
    api.ctx.sink = service
    try:
        yield service
    finally:
        await service.close()


async def _tenant_with_extension(api: Api, **tenant: Any) -> tuple[str, str, str]:
    op = (await api.operator())["id"]
    t = (await api.tenant(op, **tenant))["id"]
    ext = await api.create(
        f"/tenants/{t}/extensions", {"number": "101", "name": "Anna", "sip_password": "pw-101-x"}
    )
    return op, t, ext["id"]


async def test_an_extension_created_through_the_api_is_in_the_next_snapshot(
    api: Api, snap: SnapshotService
) -> None:
    before = snap.current.version
    await _tenant_with_extension(api)
    current = await snap.settle()
    assert current.version > before
    tenant = current.tenant_for_realm(REALM.upper())
    assert tenant is not None and tenant.active
    assert tenant.digest_algorithms == (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    ext = tenant.extensions["101"]
    assert ext.ha1[DigestAlgorithm.MD5] == digest_ha1("MD5", "101", REALM, "pw-101-x")
    assert ext.ha1[DigestAlgorithm.SHA256] == digest_ha1("SHA-256", "101", REALM, "pw-101-x")
    assert "pw-101-x" not in repr(current) and ext.ha1[DigestAlgorithm.MD5] not in repr(ext)

    store = SnapshotCredentialStore(snap)
    assert store.realm_algorithms(REALM) == (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) == ext.ha1[DigestAlgorithm.MD5]
    assert store.lookup_ha1(REALM, "102", DigestAlgorithm.MD5) is None
    assert store.realm_algorithms("other.voip.example.net") == ()


async def test_password_change_disable_and_suspend_reach_the_credential_store(
    api: Api, snap: SnapshotService
) -> None:
    _, t, e = await _tenant_with_extension(api)
    store = SnapshotCredentialStore(snap)
    r = await api.patch(f"/tenants/{t}/extensions/{e}", json={"sip_password": "new-pw-1"})
    assert r.status_code == 200, r.text
    await snap.settle()
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "101", REALM, "new-pw-1"
    )
    r = await api.patch(f"/tenants/{t}/extensions/{e}", json={"enabled": False})
    assert r.status_code == 200, r.text
    await snap.settle()
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) is None
    assert store.realm_algorithms(REALM) != ()  # the realm is still served

    op = snap.current.tenants[t].operator_id
    r = await api.patch(f"/operators/{op}/tenants/{t}", json={"status": "suspended"})
    assert r.status_code == 200, r.text
    await snap.settle()
    assert store.realm_algorithms(REALM) == ()  # a suspended tenant's realm is not served
    r = await api.patch(
        f"/operators/{op}/tenants/{t}",
        json={"status": "active", "sip": {"digest_algorithms": ["SHA-256"]}},
    )
    assert r.status_code == 200, r.text
    await snap.settle()
    assert store.realm_algorithms(REALM) == (DigestAlgorithm.SHA256,)

    r = await api.delete(f"/tenants/{t}/extensions/{e}")
    assert r.status_code == 204
    assert "101" not in (await snap.settle()).tenants[t].extensions
    r = await api.delete(f"/operators/{op}/tenants/{t}")
    assert r.status_code == 204
    current = await snap.settle()
    assert t not in current.tenants and current.tenant_for_realm(REALM) is None


async def test_a_write_is_in_effect_when_the_api_answers(api: Api, snap: SnapshotService) -> None:
    _, t, e = await _tenant_with_extension(api)  # no settle(): the 201 came after the swap
    store = SnapshotCredentialStore(snap)
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "101", REALM, "pw-101-x"
    )
    r = await api.patch(f"/tenants/{t}/extensions/{e}", json={"sip_password": "changed-pw"})
    assert r.status_code == 200
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "101", REALM, "changed-pw"
    )


async def test_realms_that_are_no_tenants_go_to_the_fallback_store(
    api: Api, snap: SnapshotService
) -> None:
    await _tenant_with_extension(api)
    await snap.settle()
    users = FileCredentialStore()
    users.add_user("legacy.test", "alice", password="secret")
    # a users-file realm that is also a tenant's: the tenant wins
    users.add_user(REALM, "101", password="file-password")
    store = SnapshotCredentialStore(snap, fallback=users)
    assert store.realm_algorithms("legacy.test") == users.realm_algorithms("legacy.test")
    assert store.lookup_ha1("legacy.test", "alice", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "alice", "legacy.test", "secret"
    )
    assert store.lookup_ha1(REALM, "101", DigestAlgorithm.MD5) == digest_ha1(
        "MD5", "101", REALM, "pw-101-x"
    )


async def _routing_fixture(db: Database, snap: SnapshotService) -> dict[str, str]:
    """An operator with two trunks and two route tables, written through the store."""
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        op = await store.platform().create_operator(
            name="Routes", domain="routes.example.net", branding={}
        )
        scope = await store.operator(op.id)
        ids = {"op": op.id}
        for name in ("a", "b"):
            trunk = await scope.trunks.add(
                m.Trunk(id=m.new_id("trk"), name=f"carrier {name}", host=f"{name}.carrier.test")
            )
            table = await scope.route_tables.add(
                m.RouteTableRow(id=m.new_id("rt"), name=f"table {name}")
            )
            await scope.routes(table).add(
                m.Route(
                    id=m.new_id("rte"),
                    prefix="7",
                    trunk_id=trunk.id,
                    cost_per_minute=Decimal("0.01"),
                )
            )
            ids[f"trunk_{name}"], ids[f"table_{name}"] = trunk.id, table.id
        await store.commit()
    await snap.settle()
    return ids


async def test_a_route_change_recompiles_only_its_table(api: Api, snap: SnapshotService) -> None:
    db = api.ctx.db
    ids = await _routing_fixture(db, snap)
    before = snap.current.operators[ids["op"]]
    assert set(before.trunks) == {ids["trunk_a"], ids["trunk_b"]}
    assert before.route_tables[ids["table_a"]].candidates("74951234567") == [ids["trunk_a"]]
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        scope = await store.operator(ids["op"])
        table = await scope.route_tables.get(ids["table_a"])
        await scope.routes(table).add(
            m.Route(id=m.new_id("rte"), prefix="7495", trunk_id=ids["trunk_b"])
        )
        await store.commit()
    after = (await snap.settle()).operators[ids["op"]]
    assert after.route_tables[ids["table_b"]] is before.route_tables[ids["table_b"]]
    assert after.trunks is before.trunks  # the operator's core was not reloaded
    # the longer prefix first, then (fallthrough) the default of its shorter prefix
    assert after.route_tables[ids["table_a"]].candidates("74951234567") == [
        ids["trunk_b"],
        ids["trunk_a"],
    ]

    # a route moved to another prefix: gone from the old one, found under the new one
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        scope = await store.operator(ids["op"])
        routes = scope.routes(await scope.route_tables.get(ids["table_a"]))
        moved = await routes.find(m.Route.prefix == "7495")
        assert moved is not None
        await routes.update(moved, {"prefix": "8"})
        await store.commit()
    table_a = (await snap.settle()).operators[ids["op"]].route_tables[ids["table_a"]]
    assert table_a.candidates("74951234567") == [ids["trunk_a"]]
    assert table_a.candidates("8123") == [ids["trunk_b"]]
    async with api.ctx.db.session() as session:
        full = await build_snapshot(session)
    assert _content(snap.current) == _content(full)

    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        scope = await store.operator(ids["op"])
        await scope.route_tables.delete(await scope.route_tables.get(ids["table_b"]))
        await store.commit()
    assert ids["table_b"] not in (await snap.settle()).operators[ids["op"]].route_tables


async def test_dids_follow_assignment_release_and_tenant_deletion(
    api: Api, snap: SnapshotService
) -> None:
    db = api.ctx.db
    op, t, _ = await _tenant_with_extension(api)
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        scope = await store.operator(op)
        for number in ("+74951110001", "+74951110002"):
            await scope.numbers.add(m.Did(id=m.new_id("did"), number=number))
        await store.commit()
    assert (await snap.settle()).did("+74951110001") is None  # a free pool number routes nowhere
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        tenant = await store.tenant(t)
        did = await tenant.operator_scope.numbers.find(m.Did.number == "+74951110001")
        assert did is not None
        await tenant.assign_number(did)
        await store.commit()
    found = (await snap.settle()).did("+74951110001")
    assert found is not None and found[0].id == t and found[1].destination is None
    async with db.session() as session:
        store = Store(session, Principal.system("test"), sink=snap)
        tenant = await store.tenant(t)
        did = await tenant.numbers.find(m.Did.number == "+74951110001")
        assert did is not None
        await tenant.release_number(did)
        await store.commit()
    assert (await snap.settle()).did("+74951110001") is None


def _content(snapshot: Snapshot) -> dict[str, Any]:
    """What a snapshot says, comparable between builds (route tables by their entries)."""
    return {
        "operators": {
            k: (
                o.domain,
                sorted(o.trunks),
                {t: sorted(map(repr, r.entries)) for t, r in o.route_tables.items()},
            )
            for k, o in snapshot.operators.items()
        },
        "tenants": dict(snapshot.tenants),
        "domains": sorted(snapshot.tenants_by_domain),
        "dids": dict(snapshot.dids),
    }


async def test_incremental_snapshot_equals_a_full_build(api: Api, snap: SnapshotService) -> None:
    op, t, e = await _tenant_with_extension(api)
    await api.tenant(op, slug="beta")
    ids = await _routing_fixture(api.ctx.db, snap)
    r = await api.patch(f"/tenants/{t}/extensions/{e}", json={"name": "Anna K."})
    assert r.status_code == 200
    r = await api.delete(f"/operators/{ids['op']}")
    assert r.status_code in (204, 409), r.text  # an operator without tenants may go
    incremental = await snap.settle()
    async with api.ctx.db.session() as session:
        full = await build_snapshot(session)
    assert _content(incremental) == _content(full)


async def test_changes_reported_together_are_one_rebuild(api: Api, snap: SnapshotService) -> None:
    op, t, _ = await _tenant_with_extension(api)
    version = (await snap.settle()).version
    for kind in ("extensions", "tenant", "dids", "trunks", "routes"):
        snap.changed([Change(op, kind, t)])  # type: ignore[arg-type]
    current = await snap.settle()
    assert current.version == version + 1
    assert "101" in current.tenants[t].extensions


async def test_a_store_that_goes_away_keeps_the_last_snapshot(postgres: Any, tmp_path: Any) -> None:
    url = postgres.create_database()
    db = Database(url)
    await db.upgrade()
    service = SnapshotService(db, debounce=0.001, retry=0.01, max_retry=0.05)
    try:
        async with db.session() as session:
            store = Store(session, Principal.system("test"), sink=service)
            await store.platform().create_operator(
                name="Gone", domain="gone.example.net", branding={}
            )
            await store.commit()
        await service.load()
        served = service.current
        assert len(served.operators) == 1
        await db.engine.dispose()
        postgres.drop_database(url)
        service.changed([Change(next(iter(served.operators)), "trunks")])
        for _ in range(500):
            if service.last_error is not None:
                break
            await asyncio.sleep(0.01)
        assert service.last_error is not None
        assert service.current is served  # still serving the last good snapshot
    finally:
        await service.close()
        await db.close()


async def test_extension_changes_reload_only_those_extensions(
    api: Api, snap: SnapshotService
) -> None:
    op, t, e = await _tenant_with_extension(api)
    other = (await api.tenant(op, slug="beta"))["id"]
    path = f"/tenants/{t}/extensions"
    second = await api.create(path, {"number": "102", "name": "Boris", "sip_password": "pw-102-x"})
    third = await api.create(path, {"number": "103", "name": "Vera"})
    before = await snap.settle()
    # a new number (with its new password), a disabled one, a deleted one, a new one
    r = await api.patch(f"{path}/{e}", json={"number": "201", "sip_password": "pw-201-x"})
    assert r.status_code == 200, r.text
    assert (await api.patch(f"{path}/{second['id']}", json={"enabled": False})).status_code == 200
    assert (await api.delete(f"{path}/{third['id']}")).status_code == 204
    await api.create(path, {"number": "104", "name": "Gleb", "sip_password": "pw-104-x"})
    after = await snap.settle()
    tenant = after.tenants[t]
    assert sorted(tenant.extensions) == ["102", "104", "201"]
    assert tenant.extensions["201"].id == e
    assert tenant.extensions["201"].ha1[DigestAlgorithm.MD5] == digest_ha1(
        "MD5", "201", REALM, "pw-201-x"
    )
    assert not tenant.extensions["102"].enabled
    assert after.tenants[other] is before.tenants[other]  # untouched tenants are shared
    async with api.ctx.db.session() as session:
        full = await build_snapshot(session)
    assert _content(after) == _content(full)


async def test_ivr_menus_follow_create_change_and_delete(api: Api, snap: SnapshotService) -> None:
    """A menu made through the API is in the next snapshot with its digit map; a change
    and a delete follow, and the incremental snapshot equals a full build."""
    _op, t, e = await _tenant_with_extension(api, features=["ivr"])
    menu = await api.create(
        f"/tenants/{t}/ivrs",
        {"name": "Main", "options": {"1": {"type": "extension", "id": e}}, "timeout_s": 8},
    )
    tenant = (await snap.settle()).tenants[t]
    ivr = tenant.ivrs[menu["id"]]
    assert (ivr.name, ivr.timeout_s, dict(ivr.options)) == (
        "Main", 8, {"1": {"type": "extension", "id": e}},
    )  # fmt: skip
    r = await api.patch(
        f"/tenants/{t}/ivrs/{menu['id']}", json={"options": {"0": {"type": "hangup"}}}
    )
    assert r.status_code == 200, r.text
    assert dict((await snap.settle()).tenants[t].ivrs[menu["id"]].options) == {
        "0": {"type": "hangup"}
    }
    assert (await api.delete(f"/tenants/{t}/ivrs/{menu['id']}")).status_code == 204
    incremental = await snap.settle()
    assert incremental.tenants[t].ivrs == {}
    async with api.ctx.db.session() as session:
        full = await build_snapshot(session)
    assert _content(incremental) == _content(full)


async def test_schedules_follow_create_and_change(api: Api, snap: SnapshotService) -> None:
    _op, t, e = await _tenant_with_extension(api, features=["schedules"])
    hours = await api.create(
        f"/tenants/{t}/schedules",
        {
            "name": "Office",
            "weekly": [{"days": ["mon"], "open": "09:00", "close": "18:00"}],
            "open_destination": {"type": "extension", "id": e},
        },
    )
    kept = (await snap.settle()).tenants[t].schedules[hours["id"]]
    assert kept.weekly == ((frozenset({"mon"}), "09:00", "18:00"),) and kept.time_zone == "UTC"
    r = await api.patch(f"/tenants/{t}/schedules/{hours['id']}", json={"holidays": ["2027-01-07"]})
    assert r.status_code == 200, r.text
    incremental = await snap.settle()
    assert incremental.tenants[t].schedules[hours["id"]].holidays == frozenset({"2027-01-07"})
    async with api.ctx.db.session() as session:
        full = await build_snapshot(session)
    assert _content(incremental) == _content(full)
