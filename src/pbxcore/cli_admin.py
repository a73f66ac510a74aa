"""``pbxcore admin``: the platform's admins, operators and tenants from the command line.

Every command opens the database (``--db``, else ``PBXCORE_DB``, else
``sqlite:///pbxcore.db``), applies the migrations, and writes through the tenancy store as
the principal ``cli``, so each change is in the audit log like one made through the API.
A generated password is printed once on stdout, as ``password: ...``. Bad input is one
line on stderr and exit status 2; an unreachable database is exit status 1.

Register it on the main typer app with ``app.add_typer(admin_app, name="admin")``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy import or_

from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.db import Database, DatabaseUnavailableError
from pbxcore.tenancy.errors import ConflictError, TenancyError
from pbxcore.tenancy.secrets import generate_password
from pbxcore.tenancy.store import MAX_PAGE, Principal, Repo, Store
from pbxcore.tenancy.views import view

__all__ = ["DB_ENV", "DEFAULT_DB", "admin_app"]

DB_ENV = "PBXCORE_DB"
DEFAULT_DB = "sqlite:///pbxcore.db"
T = TypeVar("T")

admin_app = typer.Typer(
    help="Administer the platform's store: platform admins, operators, tenants.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=DB_ENV,
        help="Database URL: sqlite:///path/pbx.db or postgresql://user@host/db.",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of stdin (default: generate one).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help='Print {"items": [...], "total": N} as the API does.')
]


class _CliError(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def fail(message: str, status: int = 2) -> NoReturn:
    """Print a one-line error and exit (2: bad input), never a traceback."""
    typer.echo(f"pbxcore: error: {message}", err=True)
    raise typer.Exit(status)


def _run(db_url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Migrate the database, run ``work`` in one transaction as ``cli``, commit."""

    async def main() -> T:
        database = Database(db_url)
        try:
            await database.upgrade()
            async with database.session() as session:
                store = Store(session, Principal.system("cli"))
                result = await work(store)
                await store.commit()
                return result
        finally:
            await database.close()

    try:
        return asyncio.run(main())
    except _CliError as exc:
        fail(str(exc), exc.status)
    except TenancyError as exc:
        fail(exc.message)
    except ValueError as exc:  # a bad database URL, a rule of tenancy.rules
        fail(str(exc))
    except DatabaseUnavailableError as exc:
        fail(str(exc), 1)


def _check(rule: Callable[[str], str], value: str, option: str) -> str:
    try:
        return rule(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password to set, and whether it was generated (then it is printed once)."""
    if not from_stdin:
        return generate_password(20), True
    line = sys.stdin.readline()
    if not line:
        fail("--password-stdin: nothing on stdin")
    return _check(rules.check_password, line.rstrip("\r\n"), "--password-stdin"), False


def _print_password(password: str, generated: bool) -> None:
    if generated:
        typer.echo(f"password: {password}")
        typer.echo("pbxcore: the password is shown this once; keep it now", err=True)


async def _login_free(store: Store, login: str) -> None:
    if await store.find_login(login) is not None:
        raise ConflictError(f"the username {login!r} is taken", code="duplicate")


@admin_app.command("create-platform-admin")
def create_platform_admin(
    username: Annotated[str, typer.Argument(help="The login of the new platform admin.")],
    password_stdin: PasswordStdin = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a platform admin (the password is generated and printed once if not given)."""
    username = _check(rules.check_username, username, "USERNAME")
    password, generated = _password(password_stdin)

    async def work(store: Store) -> m.User:
        await _login_free(store, username)
        return await store.create_user(
            store.platform().platform_admins,
            role="platform_admin",
            username=username,
            password=password,
            login=username,
        )

    user = _run(db, work)
    typer.echo(f"platform_admin: {user.login}")
    typer.echo(f"id: {user.id}")
    _print_password(password, generated)


@admin_app.command("create-operator")
def create_operator(
    name: Annotated[str, typer.Option("--name", help="The operator's name.")],
    domain: Annotated[str, typer.Option("--domain", help="Its domain: voip.example.net.")],
    admin_username: Annotated[
        str | None,
        typer.Option(help="Also create its first operator admin (password generated, shown once)."),
    ] = None,
    admin_email: Annotated[str | None, typer.Option(help="The admin's e-mail.")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create an operator, and optionally its first admin."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        fail("--name: 1 to 200 characters")
    domain = _check(rules.check_domain, domain, "--domain")
    if admin_email is not None and admin_username is None:
        fail("--admin-email needs --admin-username")
    username = (
        None
        if admin_username is None
        else _check(rules.check_username, admin_username, "--admin-username")
    )
    email = None if admin_email is None else _check(rules.check_email, admin_email, "--admin-email")
    password = generate_password(20)

    async def work(store: Store) -> tuple[m.Operator, m.User | None]:
        platform = store.platform()
        operator = await platform.create_operator(name=name, domain=domain, branding={})
        if username is None:
            return operator, None
        await _login_free(store, username)
        admin = await store.create_user(
            platform.operator_admins(operator),
            role="operator_admin",
            username=username,
            password=password,
            login=username,
            email=email,
        )
        return operator, admin

    operator, admin = _run(db, work)
    typer.echo(f"operator: {operator.id}")
    typer.echo(f"domain: {operator.domain}")
    if admin is not None:
        typer.echo(f"operator_admin: {admin.login}")
        _print_password(password, True)


async def _user_repo(store: Store, user: m.User) -> Repo[m.User]:
    """The repository a user's own scope keeps it in (its changes are audited there)."""
    platform = store.platform()
    if user.role == "platform_admin":
        return platform.platform_admins
    if user.role == "operator_admin" and user.operator_id is not None:
        return platform.operator_admins(await platform.operators.get(user.operator_id))
    if user.role == "tenant_admin" and user.tenant_id is not None:
        return (await store.tenant(user.tenant_id)).admins
    raise _CliError(f"{user.login!r} is a {user.role}: its password is not an admin password")


@admin_app.command("reset-password")
def reset_password(
    login: Annotated[str, typer.Argument(help="What the user logs in as.")],
    password_stdin: PasswordStdin = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Set a new password for an admin and end all its sessions."""
    password, generated = _password(password_stdin)

    async def work(store: Store) -> m.User:
        user = await store.find_login(login)
        if user is None:
            raise _CliError(f"no user logs in as {login!r}")
        await store.update_user(await _user_repo(store, user), user, {"password": password})
        return user

    user = _run(db, work)
    typer.echo(f"{user.role}: {user.login}")
    typer.echo("sessions: ended")
    _print_password(password, generated)


async def _all(repo: Repo[Any], *order: Any) -> list[Any]:
    rows: list[Any] = []
    while True:
        page, total = await repo.list(MAX_PAGE, len(rows), order_by=order)
        rows.extend(page)
        if not page or len(rows) >= total:
            return rows


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"items": rows, "total": len(rows)}, indent=2, ensure_ascii=False))
        return
    table = [[c.upper() for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@admin_app.command("list-operators")
def list_operators(as_json: JsonOption = False, db: DbOption = DEFAULT_DB) -> None:
    """List the operators."""

    async def work(store: Store) -> list[dict[str, Any]]:
        rows = await _all(store.platform().operators, m.Operator.domain)
        return [view(r) for r in rows]

    _print_rows(_run(db, work), ["id", "domain", "name"], as_json)


@admin_app.command("list-tenants")
def list_tenants(
    operator: Annotated[
        str | None, typer.Option("--operator", help="Only this operator's (its id or domain).")
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """List the tenants (client PBXs), of all operators or of one."""

    async def work(store: Store) -> list[dict[str, Any]]:
        platform = store.platform()
        if operator is None:
            operators = await _all(platform.operators, m.Operator.domain)
        else:
            o = m.Operator
            found = await platform.operators.find(
                or_(o.id == operator, o.domain == operator.strip().lower().rstrip("."))
            )
            if found is None:
                raise _CliError(f"--operator: no operator with id or domain {operator!r}")
            operators = [found]
        rows: list[dict[str, Any]] = []
        for row in operators:
            scope = await store.operator(row.id)
            rows += [view(t) for t in await _all(scope.tenants, m.Tenant.slug)]
        return rows

    _print_rows(_run(db, work), ["id", "domain", "status", "name"], as_json)
