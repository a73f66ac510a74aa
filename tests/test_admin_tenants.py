"""Operators, client PBXs (tenants) and their admins through the API, on both stores."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from pbxcore.tenancy import models as m
from tests.api_fixtures import Api


async def test_operator_crud_and_validation(api: Api) -> None:
    op = await api.create(
        "/operators",
        {"name": "Op", "domain": "Voip.Example.NET", "branding": {"primary_color": "#AABBCC"}},
    )
    assert op["domain"] == "voip.example.net"
    assert op["branding"] == {"primary_color": "#aabbcc"}
    assert {"id", "created_at", "updated_at"} <= op.keys()
    r = await api.post("/operators", json={"name": "Op", "domain": "voip.example.net"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate"
    r = await api.post(
        "/operators",
        json={"name": "x", "domain": "d.example", "branding": {"primary_color": "red"}},
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"]["field"] == "branding.primary_color"
    r = await api.post("/operators", json={"name": "x", "domain": "no_dots"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "domain"
    r = await api.post("/operators", json={"name": "x", "domain": "a.example", "colour": 1})
    assert r.status_code == 422  # unknown field
    r = await api.patch(f"/operators/{op['id']}", json={"name": "Renamed"})
    assert r.status_code == 200 and r.json()["name"] == "Renamed"
    listed = (await api.get("/operators", params={"limit": 1})).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == op["id"]
    assert (await api.delete(f"/operators/{op['id']}")).status_code == 204
    assert (await api.get(f"/operators/{op['id']}")).status_code == 404


async def test_tenant_domain_limits_and_slug_rules(api: Api) -> None:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme", features=["ivr"], limits={"max_extensions": 3})
    assert t["domain"] == "acme.voip.example.net"
    assert t["limits"]["max_extensions"] == 3 and t["features"] == ["ivr"]
    assert t["sip"] == {"digest_algorithms": ["MD5", "SHA-256"]}
    for bad, field in (
        ({"slug": "Not A Label"}, "slug"),
        ({"slug": "ok", "features": ["teleport"]}, "features"),
        ({"slug": "ok", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"slug": "ok", "sip": {"digest_algorithms": ["SHA-1"]}}, "sip.digest_algorithms"),
        ({"slug": "ok", "limits": {"max_extensions": -1}}, "limits.max_extensions"),
        ({"slug": "ok", "route_table_id": "rt_nope"}, "route_table_id"),
    ):
        r = await api.post(f"/operators/{op['id']}/tenants", json={"name": "X"} | bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["details"]["field"] == field
    r = await api.post(f"/operators/{op['id']}/tenants", json={"name": "Again", "slug": "acme"})
    assert r.status_code == 409
    r = await api.patch(f"/operators/{op['id']}/tenants/{t['id']}", json={"slug": "other"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "slug"
    r = await api.patch(
        f"/operators/{op['id']}/tenants/{t['id']}", json={"limits": {"max_dids": 7}}
    )
    assert r.status_code == 200
    assert r.json()["limits"] == {
        "max_extensions": 3,
        "max_concurrent_calls": 4,
        "max_dids": 7,
        "international_calls": False,
    }
    # an operator's domain cannot move under its tenants' SIP realms
    r = await api.patch(f"/operators/{op['id']}", json={"domain": "other.example"})
    assert r.status_code == 409
    r = await api.delete(f"/operators/{op['id']}")
    assert r.status_code == 409


async def test_operator_admin_sees_only_its_operator(api: Api) -> None:
    a = await api.operator("a.example")
    b = await api.operator("b.example")
    ta = await api.tenant(a["id"], "one")
    await api.create(
        f"/operators/{a['id']}/admins", {"username": "alice", "password": "alice-pass-1"}
    )
    alice = await api.login("alice", "alice-pass-1")
    assert (await api.get(f"/operators/{a['id']}/tenants", alice)).json()["total"] == 1
    for path in (
        f"/operators/{b['id']}/tenants",
        f"/operators/{b['id']}",
        "/operators",
        f"/operators/{a['id']}/admins",
    ):
        r = await api.get(path, alice)
        assert r.status_code == 404, path
    r = await api.get(f"/operators/{b['id']}/tenants/{ta['id']}")
    assert r.status_code == 404  # the tenant is not under that operator


async def test_client_admin_login_suspension_and_sessions(api: Api) -> None:
    op = await api.operator()
    t = await api.tenant(op["id"], "acme")
    created = await api.create(
        f"/tenants/{t['id']}/admins",
        {"username": "boss", "email": "boss@acme.example", "full_name": "The Boss"},
    )
    assert created["login"] == "boss@acme.voip.example.net"
    assert created["login_url"] == "https://acme.voip.example.net/"
    boss = await api.login(created["login"], created["password"])
    me = (await api.get("/auth/me", boss)).json()
    assert me["role"] == "tenant_admin" and me["tenant_id"] == t["id"]
    assert (await api.get(f"/tenants/{t['id']}/admins", boss)).status_code == 200
    # the client admin cannot create admins nor reach the operator scope
    r = await api.post(
        f"/tenants/{t['id']}/admins", boss, json={"username": "x", "email": "x@acme.example"}
    )
    assert r.status_code == 403
    assert (await api.get(f"/operators/{op['id']}/tenants", boss)).status_code == 404
    # password change ends the other sessions, keeps this one
    other = await api.login(created["login"], created["password"])
    r = await api.post(
        "/auth/password",
        boss,
        json={"current_password": created["password"], "new_password": "new-password-1"},
    )
    assert r.status_code == 204
    assert (await api.get("/auth/me", other)).status_code == 401
    assert (await api.get("/auth/me", boss)).status_code == 200
    # logout ends this one
    assert (await api.post("/auth/logout", boss)).status_code == 204
    assert (await api.get("/auth/me", boss)).status_code == 401
    r = await api.client.post(
        "/api/v1/auth/token", data={"username": created["login"], "password": created["password"]}
    )
    assert r.status_code == 401


async def test_login_rate_limit(api: Api) -> None:
    for _ in range(5):
        r = await api.client.post(
            "/api/v1/auth/token", data={"username": "admin", "password": "wrong"}
        )
        assert r.status_code == 401
    r = await api.client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": "platform-admin-pw"}
    )
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert r.json()["error"]["code"] == "too_many_login_failures"


async def test_expired_token_is_refused(api: Api) -> None:
    short = await api.login("admin", "platform-admin-pw")
    assert (await api.get("/auth/me", short)).status_code == 200
    session_id = short["Authorization"].split()[1].split(".")[0]
    async with api.ctx.db.session() as session:  # the session's expiry passes
        await session.execute(
            update(m.Session)
            .where(m.Session.id == session_id)
            .values(expires_at=m.utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    api.ctx.sessions.drop(session_id)  # as after the cache's revalidation interval
    r = await api.get("/auth/me", short)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    assert (await api.get("/auth/me")).status_code == 200  # the other token still works
