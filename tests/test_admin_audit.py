"""The audit log through the API, per operator and per tenant, on both stores."""

from __future__ import annotations

import json
from typing import Any

from tests.api_fixtures import Api


async def _setup(api: Api) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """An operator with a tenant and its admin (created with a password), logged in."""
    op = await api.operator()
    t = await api.tenant(op["id"], "acme")
    await api.create(
        f"/tenants/{t['id']}/admins",
        {"username": "boss", "email": "boss@acme.example", "password": "boss-secret-pw"},
    )
    boss = await api.login("boss@acme.voip.example.net", "boss-secret-pw")
    return op, t, boss


async def test_tenant_audit_newest_first_and_secrets_masked(api: Api) -> None:
    _op, t, boss = await _setup(api)
    ext = await api.create(
        f"/tenants/{t['id']}/extensions",
        {"number": "101", "name": "Reception", "sip_password": "sip-secret-101"},
        boss,
    )
    r = await api.patch(f"/tenants/{t['id']}/extensions/{ext['id']}", boss, json={"name": "Desk"})
    assert r.status_code == 200
    r = await api.get(f"/tenants/{t['id']}/audit", boss)
    assert r.status_code == 200, r.text
    page = r.json()
    entries = page["items"]
    assert page["total"] == len(entries) == 4  # tenant, its admin, the extension twice
    assert [(e["action"], e["entity"]) for e in entries] == [
        ("update", "extension"),
        ("create", "extension"),
        ("create", "tenant_admin"),
        ("create", "tenant"),
    ]
    ats = [e["at"] for e in entries]
    assert ats == sorted(ats, reverse=True)
    update, create_ext, create_admin, _create_tenant = entries
    assert update["before"]["name"] == "Reception" and update["after"]["name"] == "Desk"
    assert update["actor"] == "boss@acme.voip.example.net"
    assert create_admin["actor"] == "admin"
    # write-only values: shown as set, never their value, nor a hash of it
    assert create_admin["after"]["password"] == "***"
    assert create_ext["after"]["sip_password"] == "***"
    assert create_ext["after"]["has_sip_password"] is True
    text = json.dumps(page)
    for secret in ("boss-secret-pw", "sip-secret-101", "ha1", "password_hash", "argon2"):
        assert secret not in text, secret


async def test_password_change_is_audited_masked(api: Api) -> None:
    _op, t, _boss = await _setup(api)
    admins = (await api.get(f"/tenants/{t['id']}/admins")).json()["items"]
    r = await api.patch(
        f"/tenants/{t['id']}/admins/{admins[0]['id']}", json={"password": "another-secret-pw"}
    )
    assert r.status_code == 200
    r = await api.get(
        f"/tenants/{t['id']}/audit", params={"entity": "tenant_admin", "action": "update"}
    )
    (entry,) = r.json()["items"]
    assert entry["after"]["password"] == "***" and "password" not in entry["before"]
    assert "another-secret-pw" not in r.text


async def test_filters_and_paging(api: Api) -> None:
    op, t, boss = await _setup(api)
    for number in ("101", "102", "103"):
        await api.create(f"/tenants/{t['id']}/extensions", {"number": number}, boss)
    path = f"/operators/{op['id']}/audit"
    r = await api.get(path, params={"entity": "extension"})
    assert r.json()["total"] == 3
    r = await api.get(path, params={"entity": "extension", "limit": 2, "offset": 0})
    first = r.json()
    assert first["total"] == 3 and len(first["items"]) == 2
    r = await api.get(path, params={"entity": "extension", "limit": 2, "offset": 2})
    rest = r.json()["items"]
    assert len(rest) == 1
    numbers = [e["after"]["number"] for e in first["items"] + rest]
    assert numbers == ["103", "102", "101"]
    ext_id = rest[0]["entity_id"]
    r = await api.get(path, params={"entity_id": ext_id})
    assert [e["entity_id"] for e in r.json()["items"]] == [ext_id]
    r = await api.get(path, params={"action": "delete"})
    assert r.json() == {"items": [], "total": 0}
    r = await api.get(path, params={"action": "destroy"})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "action"
    r = await api.get(path, params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "limit"
    r = await api.get(path, params={"entity": "x" * 33})
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "entity"


async def test_scopes(api: Api) -> None:
    op, t, boss = await _setup(api)
    other_op = await api.operator("other.example", "Other")
    other_t = await api.tenant(other_op["id"], "beta")
    # the operator's log holds its own entries and its tenants', never another operator's
    await api.create(
        f"/operators/{op['id']}/admins", {"username": "opadmin", "password": "op-admin-pw"}
    )
    opadmin = await api.login("opadmin", "op-admin-pw")
    r = await api.get(f"/operators/{op['id']}/audit", opadmin)
    assert r.status_code == 200
    entries = r.json()["items"]
    assert {e["operator_id"] for e in entries} == {op["id"]}
    assert {"operator", "operator_admin", "tenant", "tenant_admin"} <= {
        e["entity"] for e in entries
    }
    assert t["id"] in {e["tenant_id"] for e in entries}
    assert "op-admin-pw" not in r.text
    r = await api.get(f"/tenants/{t['id']}/audit", opadmin)
    assert r.status_code == 200 and r.json()["total"] == 2
    for path in (f"/operators/{other_op['id']}/audit", f"/tenants/{other_t['id']}/audit"):
        r = await api.get(path, opadmin)
        assert r.status_code == 404, path
    # the tenant admin sees its tenant's log only
    r = await api.get(f"/tenants/{t['id']}/audit", boss)
    assert {e["tenant_id"] for e in r.json()["items"]} == {t["id"]}
    for path in (
        f"/operators/{op['id']}/audit",
        f"/tenants/{other_t['id']}/audit",
        "/tenants/ten_nope/audit",
    ):
        r = await api.get(path, boss)
        assert r.status_code == 404, path
    # the platform admin sees any
    r = await api.get(f"/operators/{other_op['id']}/audit")
    assert r.status_code == 200 and r.json()["total"] == 2  # the operator and its tenant
    assert (await api.get(f"/tenants/{t['id']}/audit", {})).status_code == 401
