"""Whether committed data may have changed, from PostgreSQL's LISTEN/NOTIFY.

Migration 0006_change_notify makes each committed write to a configuration table send a
notification on the channel ``pbx_changes``, whoever writes: this node's API, another node,
the CLI, plain SQL. A :class:`ChangeFeed` keeps a connection of its own LISTENing there and
moves its :meth:`version` on each notification; the node moves it as well right after each
of its own commits (:meth:`ChangeFeed.moved`), so that its next read sees its own write
without waiting for the notification.

The read cache keeps an answer under the version read *before* the answer was computed,
and gives it only while the version is still that one. A write that the answer may have
missed committed after that moment, so its notification (or the local move) comes after
it too: the version has moved by then.

When notifications may have been missed the feed says so: before the first LISTEN and from
a connection loss until LISTEN is back, :meth:`version` answers a value equal to nothing
(every read goes to the database), and each new LISTEN moves the version (all kept answers
are dropped). A loss that no socket error reports (a network partition) is found by a
heartbeat query after ``heartbeat`` seconds without a notification, which must be answered
within ``heartbeat`` seconds more: that bounds the time a partitioned node may keep an
answer that another node's write made stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CHANNEL", "ChangeFeed"]

log = logging.getLogger(__name__)

CHANNEL = "pbx_changes"
_SYNC = "sync:"  # a barrier's payload (Database.caught_up), not a change


class ChangeFeed:
    """A version that moves whenever committed data may have changed (see the module)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        heartbeat: float = 1.0,
        retry: float = 0.2,
        max_retry: float = 5.0,
    ) -> None:
        # ``connect()``: a new psycopg AsyncConnection in autocommit mode
        self._connect = connect
        self.heartbeat = heartbeat
        self.retry = retry
        self.max_retry = max_retry
        self._version = 0
        self._live = False
        self._task: asyncio.Task[None] | None = None
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._state = asyncio.Condition()
        self.connects = 0  # LISTENs so far
        self.backend_pid: int | None = None  # of the listening connection
        self.last_error: str | None = None

    @property
    def live(self) -> bool:
        """Whether the feed is LISTENing (no notification can be missed)."""
        return self._live

    def version(self) -> object:
        """The current version; while not listening, a value equal to no other."""
        if self._task is None:
            self.start()
        return self._version if self._live else object()

    def moved(self) -> None:
        """This node committed a write: move the version now."""
        self._version += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="change-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait(self, predicate: Callable[[ChangeFeed], bool]) -> None:
        """Until ``predicate(self)`` holds (checked on each connect and loss)."""
        if self._task is None:
            self.start()
        async with self._state:
            await self._state.wait_for(lambda: predicate(self))

    def barrier(self) -> tuple[str, asyncio.Future[None]]:
        """A payload to NOTIFY and the future its arrival (or a loss) resolves."""
        token = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._barriers[token] = future
        return _SYNC + token, future

    def forget(self, payload: str) -> None:
        self._barriers.pop(payload.removeprefix(_SYNC), None)

    def _received(self, payload: str) -> None:
        if payload.startswith(_SYNC):
            future = self._barriers.pop(payload.removeprefix(_SYNC), None)
            if future is not None and not future.done():
                future.set_result(None)
        else:
            self._version += 1

    async def _changed_state(self) -> None:
        async with self._state:
            self._state.notify_all()

    async def _run(self) -> None:
        delay = self.retry
        while True:
            try:
                conn = await self._connect()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("change feed: cannot connect, retry in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # whatever committed before LISTEN was not heard: drop every kept answer
                    self._version += 1
                    self._live = True
                    self.connects += 1
                    self.backend_pid = conn.info.backend_pid
                    self.last_error = None
                    delay = self.retry
                    await self._changed_state()
                    await self._listen(conn)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("change feed: connection lost, reconnecting: %s", exc)
            finally:
                self._lost()
            await self._changed_state()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry)

    async def _listen(self, conn: Any) -> None:
        while True:
            heard = False
            async for notify in conn.notifies(timeout=self.heartbeat):
                heard = True
                self._received(notify.payload)
            if not heard:  # quiet: is the connection still there?
                await asyncio.wait_for(conn.execute("SELECT 1"), self.heartbeat)

    def _lost(self) -> None:
        self._live = False
        self._version += 1
        self.backend_pid = None
        # nothing kept is used until LISTEN is back: a barrier has nothing left to wait for
        barriers, self._barriers = self._barriers, {}
        for future in barriers.values():
            if not future.done():
                future.set_result(None)
