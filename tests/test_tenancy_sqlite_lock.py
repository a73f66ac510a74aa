"""SQLite statements run on the loop's thread; a lock held by another connection is waited
for without blocking the loop, and past the busy time the API answers 503."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

from pbxcore.admin import create_app
from pbxcore.tenancy import db as dbmod
from pbxcore.tenancy.bootstrap import ensure_platform_admin
from pbxcore.tenancy.db import Database
from tests.api_fixtures import ADMIN_PASSWORD, Api, make_context


async def _api(database: Database) -> tuple[httpx.AsyncClient, Api]:
    await ensure_platform_admin(database, ADMIN_PASSWORD)
    ctx = make_context(database)
    transport = httpx.ASGITransport(app=create_app(ctx), raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    api = Api(client, ctx)
    api.admin = await api.login("admin", ADMIN_PASSWORD)
    return client, api


async def test_write_waits_for_another_connections_lock(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    database = Database(f"sqlite:///{path}")
    await database.upgrade()
    client, api = await _api(database)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        write = asyncio.create_task(
            api.post("/operators", json={"name": "Op", "domain": "op.example.net"})
        )
        # meanwhile the loop serves other requests, reads included
        for _ in range(5):
            assert (await api.get("/health", headers={})).status_code == 200
            assert (await api.get("/operators")).status_code == 200
            await asyncio.sleep(0.05)
        assert not write.done()
        other.execute("COMMIT")
        r = await asyncio.wait_for(write, 5)
        assert r.status_code == 201, r.text
    finally:
        other.close()
        await client.aclose()
        await database.close()


async def test_lock_held_past_the_busy_time_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "SQLITE_BUSY_MS", 300)
    path = tmp_path / "pbx.db"
    database = Database(f"sqlite:///{path}")
    await database.upgrade()
    client, api = await _api(database)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        r = await api.post("/operators", json={"name": "Op", "domain": "op.example.net"})
        assert r.status_code == 503, r.text
        assert "locked" in r.json()["error"]["message"]
        other.execute("ROLLBACK")
        r = await api.post("/operators", json={"name": "Op", "domain": "op.example.net"})
        assert r.status_code == 201, r.text
    finally:
        other.close()
        await client.aclose()
        await database.close()
