"""schemathesis against the OpenAPI document of a running ``pbxcore serve``: generated
requests (valid and invalid) on every operation never get a 5xx, and every response
matches the schema the document declares for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.peers.pbxserve import start_serve, stop_serve

ADMIN_PASSWORD = "fuzz-admin-pw-1"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("fuzz")
    args = [
        "--db", f"sqlite:///{folder}/pbx.db", "--api-listen", "127.0.0.1:0",
        "--sip-listen", "udp:127.0.0.1:0", "--data-dir", str(folder / "data"),
    ]  # fmt: skip
    server = start_serve(
        args,
        folder / "server.log",
        listening=1,
        api=True,
        env={"PBXCORE_ADMIN_PASSWORD": ADMIN_PASSWORD, "PBXCORE_SECRET_KEY": "fuzz-key-0123456789"},
    )
    try:
        assert server.api is not None
        http = httpx.Client(base_url=server.api, timeout=30)
        token = http.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        # some objects to find: an operator, a tenant, an extension
        op = http.post("/operators", json={"name": "Fuzz", "domain": "fuzz.test"}, headers=headers)
        t = http.post(
            f"/operators/{op.json()['id']}/tenants",
            json={"name": "Acme", "slug": "acme", "limits": {"max_extensions": 10_000}},
            headers=headers,
        )
        http.post(
            f"/tenants/{t.json()['id']}/extensions",
            json={"number": "101", "sip_password": "fuzz-pw-101"},
            headers=headers,
        )
        yield {"base": server.api.removesuffix("/api/v1"), "headers": headers, "log": server.log}
    finally:
        code = stop_serve(server)
    assert code == 0
    assert "Traceback" not in Path(server.log).read_text(), "an unexpected exception was logged"


def test_no_5xx_and_responses_match_their_schema(running: dict[str, Any]) -> None:
    # schemathesis' pytest plugin (from_fixture) does not run on pytest 9: the operations
    # are walked here, each with its own Hypothesis run
    api = schemathesis.openapi.from_url(f"{running['base']}/api/v1/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            if case.path in ("/api/v1/auth/logout", "/api/v1/auth/password"):
                case.headers = {}  # must not end the session every other case uses
            else:
                case.headers = (case.headers or {}) | running["headers"]
            response = case.call(base_url=running["base"])
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            # our rules (a domain, a slug, a colour ...) say more than JSON Schema can: a
            # schema-valid body may still be a 422, so "valid data accepted" is not checked
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert operations > 30
    assert not failures, "\n\n".join(failures)
