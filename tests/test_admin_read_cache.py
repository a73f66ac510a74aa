"""Kept list answers (Store.read_through): never stale, never shared across scopes."""

from __future__ import annotations

from sqlalchemy import update

from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from tests.api_fixtures import Api


async def _tenant_with_extension(api: Api) -> tuple[dict[str, str], dict[str, str]]:
    op = await api.operator("a.example")
    tenant = await api.tenant(op["id"], "one")
    await api.create(f"/tenants/{tenant['id']}/extensions", {"number": "100", "name": "Alice"})
    return op, tenant


async def test_a_kept_list_follows_every_write(api: Api) -> None:
    _, tenant = await _tenant_with_extension(api)
    path = f"/tenants/{tenant['id']}/extensions"
    first = (await api.get(path)).json()
    hits = api.ctx.reads.hits
    assert (await api.get(path)).json() == first
    assert api.ctx.reads.hits == hits + 1  # the second answer was the kept one
    # a write through the API
    await api.create(path, {"number": "101", "name": "Bob"})
    listed = (await api.get(path)).json()
    assert [e["name"] for e in listed["items"]] == ["Alice", "Bob"] and listed["total"] == 2
    # a write the API never saw: another connection pool, as the CLI or another node has
    other = Database(api.ctx.db.url.replace("+aiosqlite", "").replace("+psycopg", ""))
    try:
        async with other.session() as session:
            await session.execute(
                update(m.Extension).where(m.Extension.number == "100").values(name="Alicia")
            )
            await session.commit()
    finally:
        await other.close()
    listed = (await api.get(path)).json()
    assert [e["name"] for e in listed["items"]] == ["Alicia", "Bob"]
    # paging is part of the key
    assert [e["number"] for e in (await api.get(path, params={"limit": 1})).json()["items"]] == [
        "100"
    ]


async def test_a_kept_list_is_not_given_to_another_scope(api: Api) -> None:
    a, tenant = await _tenant_with_extension(api)
    b = await api.operator("b.example")
    await api.create(f"/operators/{b['id']}/admins", {"username": "bob", "password": "bob-pass-12"})
    bob = await api.login("bob", "bob-pass-12")
    path = f"/tenants/{tenant['id']}/extensions"
    assert (await api.get(path)).status_code == 200  # kept for the platform admin
    r = await api.get(path, bob)
    assert r.status_code == 404
    assert "Alice" not in r.text
    await api.create(f"/operators/{a['id']}/admins", {"username": "al", "password": "al-pass-123"})
    al = await api.login("al", "al-pass-123")
    assert (await api.get(path, al)).json()["items"][0]["name"] == "Alice"
