"""Storage: migrations up and down on both stores, the migrated schema equals the models,
and a store that is down or locked is a clear 503, never a 500 or a hang."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from pbxcore.admin import create_app
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database, DatabaseUnavailableError, normalize_url
from tests.api_fixtures import ADMIN_PASSWORD, Api, make_context

TABLES = {t.name for t in m.Base.metadata.sorted_tables}


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return names - {"alembic_version"}


async def test_upgrade_to_head_and_downgrade_to_base(db_url: str) -> None:
    db = Database(db_url)
    try:
        await db.upgrade()
        assert await _tables(db) == TABLES
        # what the migrations built is what the models say: no drift between the two
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), m.Base.metadata)
            )
        assert diff == [], diff
        await db.downgrade("0001")
        await db.upgrade()  # a step down and up again
        await db.downgrade()
        assert await _tables(db) == set()
        await db.upgrade()
        assert await _tables(db) == TABLES
    finally:
        await db.close()


def test_urls_get_their_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    with pytest.raises(ValueError, match="unsupported database"):
        normalize_url("mysql://u@h/db")


async def test_an_unreachable_postgresql_is_a_503(tmp_path: Path) -> None:
    from tests.peers.postgres import _free_port  # noqa: PLC0415 - a port nobody listens on

    db = Database(f"postgresql://nobody@127.0.0.1:{_free_port()}/none")
    try:
        with pytest.raises(DatabaseUnavailableError, match="unavailable"):
            async with db.session() as session:
                await session.get(m.Operator, "op_x")
        app = create_app(make_context(db))
        import httpx  # noqa: PLC0415

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(
                "/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_unavailable"
            r = await client.get("/api/v1/operators", headers={"Authorization": "Bearer ses_x.y"})
            assert r.status_code in (401, 503), r.text
    finally:
        await db.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_store_is_a_503_not_a_hang(api: Api, db_url: str) -> None:
    path = db_url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("PRAGMA busy_timeout = 0")
    try:
        locker.execute("BEGIN EXCLUSIVE")
        body: dict[str, Any] = {"name": "Locked", "domain": "locked.example.net"}
        r = await asyncio.wait_for(api.post("/operators", json=body), timeout=60)
        assert r.status_code == 503, r.text
        assert "locked" in r.json()["error"]["message"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    r = await api.post("/operators", json=body)
    assert r.status_code == 201, r.text  # and it recovers once the lock is gone
