"""Kept list answers (Store.read_through): never stale, never shared across scopes; on
PostgreSQL another node's write is seen once its notification has arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text, update

from pbxcore.admin import create_app
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from tests.api_fixtures import ADMIN_PASSWORD, Api, make_context


async def _tenant_with_extension(api: Api) -> tuple[dict[str, str], dict[str, str]]:
    op = await api.operator("a.example")
    tenant = await api.tenant(op["id"], "one")
    await api.create(f"/tenants/{tenant['id']}/extensions", {"number": "100", "name": "Alice"})
    return op, tenant


async def test_a_kept_list_follows_every_write(api: Api) -> None:
    _, tenant = await _tenant_with_extension(api)
    path = f"/tenants/{tenant['id']}/extensions"
    await api.ctx.db.caught_up()  # PostgreSQL: the node listens for changes
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
    await api.ctx.db.caught_up()  # PostgreSQL: the notification has arrived
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


@pytest.fixture
async def node_b(api: Api) -> AsyncIterator[Api]:
    """A second node on the same database: its own engine, pool, change feed and cache."""
    db = Database(api.ctx.db.url)
    import httpx  # noqa: PLC0415

    ctx = make_context(db)
    transport = httpx.ASGITransport(app=create_app(ctx), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            node = Api(client, ctx)
            node.admin = await node.login("admin", ADMIN_PASSWORD)
            yield node
    finally:
        await db.close()


def _names(r: object) -> list[str]:
    return [e["name"] for e in r.json()["items"]]  # type: ignore[attr-defined]


async def test_a_write_on_one_node_is_seen_by_the_other(api: Api, node_b: Api) -> None:
    _, tenant = await _tenant_with_extension(api)
    path = f"/tenants/{tenant['id']}/extensions"
    await node_b.ctx.db.caught_up()
    assert _names(await node_b.get(path)) == ["Alice"]
    hits = node_b.ctx.reads.hits
    assert _names(await node_b.get(path)) == ["Alice"]
    assert node_b.ctx.reads.hits == hits + 1  # kept on node B
    # node A's write: read-your-writes on A at once, B once it has heard of it
    await api.create(path, {"number": "101", "name": "Bob"})
    assert _names(await api.get(path)) == ["Alice", "Bob"]
    await node_b.ctx.db.caught_up()
    assert _names(await node_b.get(path)) == ["Alice", "Bob"]
    # and the other way round
    alice = (await node_b.get(path)).json()["items"][0]["id"]
    r = await node_b.patch(f"{path}/{alice}", json={"name": "Alicia"})
    assert r.status_code == 200, r.text
    await api.ctx.db.caught_up()
    assert _names(await api.get(path)) == ["Alicia", "Bob"]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_lost_listen_connection_drops_every_kept_answer(api: Api, node_b: Api) -> None:
    _, tenant = await _tenant_with_extension(api)
    path = f"/tenants/{tenant['id']}/extensions"
    feed = node_b.ctx.db.changes
    assert feed is not None
    await node_b.ctx.db.caught_up()
    assert _names(await node_b.get(path)) == ["Alice"]
    assert _names(await node_b.get(path)) == ["Alice"]  # kept on B
    connects, pid = feed.connects, feed.backend_pid
    feed.retry = 3600.0  # B stays deaf once its connection is gone
    async with api.ctx.db.session() as session:  # the connection goes; then a write
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await feed.wait(lambda f: not f.live)
    async with api.ctx.db.session() as session:
        await session.execute(
            update(m.Extension).where(m.Extension.number == "100").values(name="Alicia")
        )
        await session.commit()
    # B missed the notification: nothing kept is used, every read is fresh
    hits = node_b.ctx.reads.hits
    assert _names(await node_b.get(path)) == ["Alicia"]
    assert _names(await node_b.get(path)) == ["Alicia"]
    assert node_b.ctx.reads.hits == hits
    # listening again, B keeps answers again
    await feed.close()
    feed.retry = 0.2
    feed.start()
    await feed.wait(lambda f: f.live and f.connects > connects)
    assert _names(await node_b.get(path)) == ["Alicia"]
    assert _names(await node_b.get(path)) == ["Alicia"]
    assert node_b.ctx.reads.hits == hits + 1
