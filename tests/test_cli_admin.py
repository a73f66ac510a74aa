"""``pbxcore admin``: the command line on a fresh SQLite file and on PostgreSQL.

What the CLI creates is checked through the admin API on the same database (its admins log
in, see their scope), and in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from pbxcore.admin import create_app
from pbxcore.cli import app
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from tests.api_fixtures import Api, make_context
from tests.helpers import pbxcore_command

runner = CliRunner()


async def cli(db_url: str, *args: str, stdin: str | None = None) -> Result:
    """``pbxcore admin ARGS --db URL`` (in a thread: the command runs its own event loop)."""
    return await asyncio.to_thread(
        runner.invoke, app, ["admin", *args, "--db", db_url], input=stdin
    )


def ok(result: Result) -> dict[str, str]:
    """The ``key: value`` lines of a successful command."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def refused(result: Result) -> str:
    """A bad-input failure: exit 2, one line on stderr, no traceback; that line."""
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbxcore: error: "), result.stderr
    return lines[0]


@asynccontextmanager
async def api_on(db_url: str) -> AsyncIterator[Api]:
    """The admin API on the CLI's database; sessions revalidated on every request."""
    db = Database(db_url)
    ctx = make_context(db, session_revalidate_s=0)
    transport = httpx.ASGITransport(app=create_app(ctx), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield Api(c, ctx)
    finally:
        await db.close()


async def token_status(api: Api, username: str, password: str) -> int:
    r = await api.client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    return r.status_code


async def test_create_operator_with_admin_who_logs_in(db_url: str) -> None:
    out = ok(
        await cli(
            db_url,
            "create-operator",
            "--name",
            "Example Telecom",
            "--domain",
            "Voip.Example.NET",
            "--admin-username",
            "alice",
            "--admin-email",
            "alice@example.com",
        )
    )
    assert out["domain"] == "voip.example.net" and out["operator_admin"] == "alice"
    op_id, password = out["operator"], out["password"]
    async with api_on(db_url) as api:
        alice = await api.login("alice", password)
        me = (await api.get("/auth/me", alice)).json()
        assert me["role"] == "operator_admin" and me["operator_id"] == op_id
        t = await api.create(f"/operators/{op_id}/tenants", {"name": "Acme", "slug": "acme"}, alice)
        assert t["domain"] == "acme.voip.example.net"
        assert (await api.get("/operators", alice)).status_code == 404
        # the CLI's writes are audited as "cli", the generated password masked
        r = await api.get(f"/operators/{op_id}/audit", alice, params={"entity": "operator_admin"})
        (entry,) = r.json()["items"]
        assert entry["actor"] == "cli" and entry["after"]["password"] == "***"
        assert entry["after"]["email"] == "alice@example.com"
        assert password not in r.text
    ok_only = ok(await cli(db_url, "create-operator", "--name", "Bare", "--domain", "b.example"))
    assert "password" not in ok_only and "operator_admin" not in ok_only


async def test_platform_admin_and_reset_password(db_url: str) -> None:
    out = ok(
        await cli(
            db_url, "create-platform-admin", "root", "--password-stdin", stdin="first-pass-1\n"
        )
    )
    assert out == {"platform_admin": "root", "id": out["id"]}  # a given password is not echoed
    async with api_on(db_url) as api:
        old = await api.login("root", "first-pass-1")
        assert (await api.get("/operators", old)).status_code == 200
        # a generated password, printed once; the old password and its sessions stop working
        out = ok(await cli(db_url, "reset-password", "root"))
        assert out["platform_admin"] == "root"
        new_password = out["password"]
        assert (await api.get("/auth/me", old)).status_code == 401
        assert await token_status(api, "root", "first-pass-1") == 401
        assert await token_status(api, "root", new_password) == 200
        # a tenant admin's, given on stdin
        root = await api.login("root", new_password)
        op = await api.create("/operators", {"name": "Op", "domain": "voip.example.net"}, root)
        t = await api.create(
            f"/operators/{op['id']}/tenants", {"name": "Acme", "slug": "acme"}, root
        )
        created = await api.create(
            f"/tenants/{t['id']}/admins", {"username": "boss", "email": "b@acme.example"}, root
        )
        login = created["login"]
        boss = await api.login(login, created["password"])
        out = ok(
            await cli(
                db_url, "reset-password", login.upper(), "--password-stdin", stdin="boss-new-pass\n"
            )
        )
        assert out == {"tenant_admin": login, "sessions": "ended"}
        assert (await api.get("/auth/me", boss)).status_code == 401
        assert await token_status(api, login, created["password"]) == 401
        assert await token_status(api, login, "boss-new-pass") == 200
        r = await api.get(f"/tenants/{t['id']}/audit", root, params={"action": "update"})
        (entry,) = r.json()["items"]
        assert entry["actor"] == "cli" and entry["entity"] == "tenant_admin"
        assert entry["after"]["password"] == "***" and "boss-new-pass" not in r.text


async def test_lists(db_url: str) -> None:
    ok(
        await cli(
            db_url, "create-platform-admin", "root", "--password-stdin", stdin="root-pass-1\n"
        )
    )
    a = ok(await cli(db_url, "create-operator", "--name", "A Telecom", "--domain", "a.example"))
    b = ok(await cli(db_url, "create-operator", "--name", "B Telecom", "--domain", "b.example"))
    async with api_on(db_url) as api:
        root = await api.login("root", "root-pass-1")
        for op, slug in ((a, "one"), (a, "two"), (b, "three")):
            await api.create(
                f"/operators/{op['operator']}/tenants", {"name": slug.title(), "slug": slug}, root
            )
    listed = json.loads(ok_raw(await cli(db_url, "list-operators", "--json")))
    assert listed["total"] == 2
    assert [o["domain"] for o in listed["items"]] == ["a.example", "b.example"]
    every = json.loads(ok_raw(await cli(db_url, "list-tenants", "--json")))
    assert sorted(t["domain"] for t in every["items"]) == [
        "one.a.example",
        "three.b.example",
        "two.a.example",
    ]
    assert every["total"] == 3
    for key in (a["operator"], "A.Example", "a.example."):
        of_a = json.loads(ok_raw(await cli(db_url, "list-tenants", "--operator", key, "--json")))
        assert [t["slug"] for t in of_a["items"]] == ["one", "two"], key
    text = ok_raw(await cli(db_url, "list-tenants", "--operator", "b.example"))
    header, row = text.splitlines()
    assert header.split() == ["ID", "DOMAIN", "STATUS", "NAME"]
    assert row.split()[1:] == ["three.b.example", "active", "Three"]


def ok_raw(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


async def test_bad_input_exits_2_with_one_line(db_url: str) -> None:
    ok(
        await cli(
            db_url,
            "create-operator",
            "--name",
            "Op",
            "--domain",
            "voip.example.net",
            "--admin-username",
            "alice",
        )
    )
    cases: list[tuple[list[str], str | None, str]] = [
        (["create-operator", "--name", "X", "--domain", "no_dots"], None, "--domain"),
        (["create-operator", "--name", "X", "--domain", "Voip.example.net"], None, "exists"),
        (["create-operator", "--name", " ", "--domain", "x.example"], None, "--name"),
        (
            [
                "create-operator",
                "--name",
                "X",
                "--domain",
                "x.example",
                "--admin-username",
                "alice",
            ],
            None,
            "taken",
        ),
        (
            ["create-operator", "--name", "X", "--domain", "x.example", "--admin-username", "-bad"],
            None,
            "--admin-username",
        ),
        (
            [
                "create-operator",
                "--name",
                "X",
                "--domain",
                "x.example",
                "--admin-username",
                "bob",
                "--admin-email",
                "nope",
            ],
            None,
            "--admin-email",
        ),
        (
            [
                "create-operator",
                "--name",
                "X",
                "--domain",
                "x.example",
                "--admin-email",
                "a@b.example",
            ],
            None,
            "--admin-username",
        ),
        (["create-platform-admin", "alice"], None, "taken"),
        (["create-platform-admin", "bad name"], None, "USERNAME"),
        (["create-platform-admin", "carol", "--password-stdin"], "short\n", "8 to 128"),
        (["create-platform-admin", "carol", "--password-stdin"], "", "nothing on stdin"),
        (["reset-password", "nobody"], None, "no user logs in as 'nobody'"),
        (["list-tenants", "--operator", "other.example"], None, "no operator"),
    ]
    for args, stdin, expected in cases:
        line = refused(await cli(db_url, *args, stdin=stdin))
        assert expected in line, (args, line)
    # nothing of the refused commands was written (a duplicate rolled back whole)
    db = Database(db_url)
    try:
        async with db.session() as session:
            domains = (await session.scalars(select(m.Operator.domain))).all()
            logins = (await session.scalars(select(m.User.login))).all()
    finally:
        await db.close()
    assert list(domains) == ["voip.example.net"] and list(logins) == ["alice"]


def test_console_script_env_database_and_errors(tmp_path: Path) -> None:
    """As a user runs it: PBXCORE_DB picks the database; errors are one line, exit 2."""
    env = os.environ | {"PBXCORE_DB": f"sqlite:///{tmp_path}/env.db"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pbxcore_command(), "admin", *args],
            capture_output=True,
            text=True,
            input=stdin,
            env=env,
            timeout=120,
            check=False,
        )

    created = run("create-operator", "--name", "Op", "--domain", "voip.example.net")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "env.db").exists()
    listed = run("list-operators", "--json")
    assert json.loads(listed.stdout)["items"][0]["domain"] == "voip.example.net"
    for args in (
        ("create-operator", "--name", "Op", "--domain", "voip.example.net"),
        ("reset-password", "ghost"),
        ("list-operators", "--db", "mysql://db.example/x"),
        ("list-operators", "--db", "sqlite://"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("pbxcore: error:")
