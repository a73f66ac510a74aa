"""The database: one async SQLAlchemy engine over SQLite (embedded) or PostgreSQL.

``Database("sqlite:///path/pbx.db")`` or ``Database("postgresql://user@host/db")``. SQLite
runs in WAL mode with foreign keys on and a busy timeout; PostgreSQL goes through psycopg 3.
:meth:`Database.upgrade` applies the Alembic migrations (the server calls it on start).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from pbxcore.tenancy.changes import CHANNEL, ChangeFeed

__all__ = ["Database", "DatabaseUnavailableError", "normalize_url"]

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 5000
_PG_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


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
    # no waiting inside SQLite: _InlineSqlite waits for a lock without blocking the loop
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (another connection holds the lock): worth waiting for. Not
    SQLITE_BUSY_SNAPSHOT, which no wait resolves (SQLite's busy timeout does not wait)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY and code != 517


async def _unlocked(call: Callable[[], Any]) -> Any:
    """``call()``; while the database is locked, retried with growing sleeps on the loop
    for up to SQLITE_BUSY_MS (then the busy error goes up, as SQLite's busy timeout)."""
    try:
        return call()
    except sqlite3.OperationalError as exc:
        if not _busy(exc):
            raise
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    delay = 0.001
    while True:
        await asyncio.sleep(delay)
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        delay = min(delay * 2, 0.05)


class _InlineCursor:
    """The part of aiosqlite's cursor SQLAlchemy uses, run on the calling thread."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = ()) -> _InlineCursor:
        await _unlocked(lambda: self._cursor.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Any) -> _InlineCursor:
        await _unlocked(lambda: self._cursor.executemany(sql, parameters))
        return self

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _InlineQueue:
    """aiosqlite's request queue, as SQLAlchemy's isolation-level setter uses it."""

    def __init__(self) -> None:
        self.closed = False

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineSqlite:
    """An aiosqlite-compatible connection that runs each statement on the loop's thread.

    aiosqlite gives every connection a thread and every call a round trip to it (a queue,
    a wake-up, a wake-up back), several per statement. A statement on a local SQLite file
    takes microseconds, less than the round trip; what can block for long, a lock held by
    another connection, is waited for here with sleeps on the loop (:func:`_unlocked`),
    so the loop keeps serving SIP and the other requests meanwhile.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._tx = _InlineQueue()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _InlineCursor:
        return _InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> _InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        await _unlocked(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def _inline_sqlite(path: str) -> Callable[[], Any]:
    async def connect() -> _InlineSqlite:
        return _InlineSqlite(sqlite3.connect(path, check_same_thread=False))

    return connect


class Database:
    """An engine, a session factory and the migrations of one store."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 20) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            path = parsed.database or ""
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["async_creator"] = _inline_sqlite(path)
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        else:
            # a burst beyond the pool waits for a connection (up to pool_timeout) rather
            # than opening one to close it right after: a PostgreSQL connect costs a fork
            kwargs.update(pool_size=pool_size, max_overflow=pool_size // 2, pool_timeout=10)
            kwargs["connect_args"] = {"connect_timeout": 5}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._watch: sqlite3.Connection | None = None
        self._sqlite_path = parsed.database if self.dialect == "sqlite" else None
        self.changes: ChangeFeed | None = None
        session_class: type[Session] = Session
        if self.dialect == "postgresql":
            self.changes = ChangeFeed(self._listen_connection)
            # this node's commits move the version at once (read-your-writes); the
            # notification of the same commit moves it again later
            session_class = type("_FeedSession", (Session,), {})
            feed = self.changes
            event.listen(session_class, "after_commit", lambda _session: feed.moved())
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=session_class
        )
        # reads that need no transaction: on PostgreSQL no BEGIN and no ROLLBACK round trip
        # (under READ COMMITTED each statement sees its own snapshot either way)
        self._read_sessions = self.sessions
        if self.dialect == "postgresql":
            self._read_sessions = async_sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; an unreachable or locked store raises :class:`DatabaseUnavailableError`."""
        async with self.guard(), self.sessions() as session:
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: each statement on its own, no transaction around
        them (PostgreSQL; SQLite's are free, it gets a plain session). Do not write in it."""
        async with self.guard(), self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """An unreachable or locked store inside: :class:`DatabaseUnavailableError`."""
        try:
            yield
        except (OperationalError, PoolTimeout, OSError) as exc:
            raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
            raise

    async def data_version(self) -> object:
        """A value that changes whenever committed data may have changed (any connection,
        any process): SQLite's ``PRAGMA data_version`` on a connection kept for watching,
        on PostgreSQL the version of the :class:`~pbxcore.tenancy.changes.ChangeFeed`
        (no query). Equal values: the same committed data."""
        if self._sqlite_path is not None:
            try:
                if self._watch is None:
                    self._watch = sqlite3.connect(self._sqlite_path, check_same_thread=False)
                return self._watch.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
        assert self.changes is not None
        return self.changes.version()

    async def caught_up(self, timeout: float = 10.0) -> None:
        """Return once this node listens for changes and has heard of every write committed
        (by anyone) before the call: a NOTIFY of its own goes round the channel, after all
        earlier ones. SQLite: at once (its data version is read when asked)."""
        feed = self.changes
        if feed is None:
            return
        if not feed.live:
            try:
                await asyncio.wait_for(feed.wait(lambda f: f.live), timeout)
            except TimeoutError:
                raise DatabaseUnavailableError(
                    f"the database is unavailable: cannot LISTEN: {feed.last_error}"
                ) from None
        payload, heard = feed.barrier()
        try:
            async with self.engine.connect() as conn:
                await conn.execute(_PG_NOTIFY, {"channel": CHANNEL, "payload": payload})
                await conn.commit()
            await asyncio.wait_for(heard, timeout)
        except (OperationalError, PoolTimeout, OSError) as exc:
            raise DatabaseUnavailableError(_unavailable_message(exc)) from exc
        finally:
            feed.forget(payload)

    async def _listen_connection(self) -> Any:
        """A connection of its own for the change feed, as the pool's but autocommit."""
        import psycopg  # noqa: PLC0415 - only PostgreSQL needs it

        args, params = self.engine.dialect.create_connect_args(self.engine.url)
        params = {k: v for k, v in params.items() if k != "context"}  # SQLAlchemy's adapters
        params |= {"connect_timeout": 5, "autocommit": True}
        return await psycopg.AsyncConnection.connect(*args, **params)

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
        if self.changes is not None:
            await self.changes.close()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
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
