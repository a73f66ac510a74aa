"""A small synchronous client of the admin API for tests that drive ``pbxcore serve``."""

from __future__ import annotations

from typing import Any

import httpx


class ApiClient:
    """``login`` once, then ``call(method, path, expected_status, json=...)``."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.headers: dict[str, str] = {}

    def login(self, username: str, password: str) -> None:
        r = self.http.post("/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def call(self, method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, path, headers=self.headers, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else {}
