"""Fixtures for the tenancy and admin API tests, on both stores (SQLite and PostgreSQL).

``db`` is a migrated, empty :class:`Database`, once per store (the test id says which);
``api`` is an :class:`Api` client bound to an app on that database with the platform admin
logged in. The PostgreSQL cluster is started once per test session (``tests/peers/postgres``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pbxcore.admin import AdminContext, ApiSettings, create_app
from pbxcore.tenancy.bootstrap import ensure_platform_admin
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.secrets import SecretBox
from tests.peers.postgres import PostgresCluster, find_bin_dir

ADMIN_PASSWORD = "platform-admin-pw"
TEST_KEY = b"tests-secret-key-0123456789"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pbx.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    yield url
    cluster.drop_database(url)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.close()


@dataclass
class Api:
    """An HTTP client on the app, with the platform admin's token in ``admin``."""

    client: httpx.AsyncClient
    ctx: AdminContext
    admin: dict[str, str] = field(default_factory=dict)

    async def login(self, username: str, password: str) -> dict[str, str]:
        r = await self.client.post(
            "/api/v1/auth/token", data={"username": username, "password": password}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.client.request(
            method, f"/api/v1{path}", headers=self.admin if headers is None else headers, **kw
        )

    async def get(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.request("GET", path, headers, **kw)

    async def post(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.request("POST", path, headers, **kw)

    async def patch(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.request("PATCH", path, headers, **kw)

    async def delete(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.request("DELETE", path, headers, **kw)

    async def create(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST that must succeed (201); the created object."""
        r = await self.post(path, headers, json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def operator(
        self, domain: str = "voip.example.net", name: str = "Example Telecom"
    ) -> dict[str, Any]:
        return await self.create("/operators", {"name": name, "domain": domain})

    async def tenant(self, op: str, slug: str = "acme", **fields: Any) -> dict[str, Any]:
        return await self.create(
            f"/operators/{op}/tenants", {"name": slug.title(), "slug": slug} | fields
        )


def make_context(db: Database, **settings: Any) -> AdminContext:
    return AdminContext(db, SecretBox(TEST_KEY), settings=ApiSettings(**settings))


@pytest.fixture
def api_settings() -> dict[str, Any]:
    """Override in a module to change :class:`ApiSettings` for its ``api``."""
    return {}


@pytest.fixture
async def api(db: Database, api_settings: dict[str, Any]) -> AsyncIterator[Api]:
    await ensure_platform_admin(db, ADMIN_PASSWORD)
    ctx = make_context(db, **api_settings)
    app = create_app(ctx)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        api = Api(client, ctx)
        api.admin = await api.login("admin", ADMIN_PASSWORD)
        yield api
