"""GET /api/v1/health: answers without a token and touches no data."""

from __future__ import annotations

from tests.api_fixtures import Api


async def test_health_needs_no_token(api: Api) -> None:
    r = await api.get("/health", headers={})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"status": "ok"}
    # a token, even a wrong one, changes nothing
    r = await api.get("/health", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_health_is_in_the_openapi_document(api: Api) -> None:
    doc = (await api.get("/openapi.json")).json()
    operation = doc["paths"]["/api/v1/health"]["get"]
    assert "security" not in operation
