"""The database: one async SQLAlchemy engine over SQLite (embedded) or PostgreSQL.

``Database("sqlite:///path/pbx.db")`` or ``Database("postgresql://user@host/db")``. SQLite
runs in WAL mode with foreign keys on and a busy timeout; PostgreSQL goes through psycopg 3.
:meth:`Database.upgrade` applies the Alembic migrations (the server calls it on start).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["Database", "DatabaseUnavailableError", "normalize_url"]

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 5000


class DatabaseUnavailableError(Exception):
    """The store cannot be reached or is locked; the API answers 503 with this message."""


def normalize_url(url: str) -> str:
    """``sqlite:///x`` / ``postgresql://...`` to the async driver URLs SQLAlchemy wants."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"database URL must be sqlite:///path or postgresql://..., got {url!r}")
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ValueError(f"database URL {url!r} is not valid: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("an SQLite database needs a file path: sqlite:///path/pbx.db")
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///path or postgresql://")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """An engine, a session factory and the migrations of one store."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10)
            kwargs["connect_args"] = {"connect_timeout": 5}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; an unreachable or locked store raises :class:`DatabaseUnavailableError`."""
        try:
            async with self.sessions() as session:
                yield session
        except (OperationalError, PoolTimeout, OSError) as exc:
            raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
            raise

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``."""
        await self._alembic("upgrade", revision)

    async def downgrade(self, revision: str = "base") -> None:
        await self._alembic("downgrade", revision)

    async def _alembic(self, direction: str, revision: str) -> None:
        config = alembic_config(self.url)
        try:
            async with self.engine.begin() as conn:
                config.attributes["connection"] = conn

                def run(sync_conn: Any) -> None:
                    config.attributes["connection"] = sync_conn
                    getattr(command, direction)(config, revision)

                await conn.run_sync(run)
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailableError(_unavailable_message(exc)) from exc

    async def close(self) -> None:
        await self.engine.dispose()

    def close_sync(self) -> None:
        asyncio.run(self.close())


def alembic_config(url: str) -> Any:
    """An Alembic config for this package's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _unavailable_message(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "locked" in first:
        return f"the database is locked: {first}"
    return f"the database is unavailable: {first}"
