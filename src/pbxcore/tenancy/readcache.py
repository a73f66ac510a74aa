"""Answers to reads, kept while the database has not changed since they were read.

A read asks the store for its *data version* first: ``PRAGMA data_version`` of a watching
connection on SQLite (it changes whenever any other connection, of this process or another,
commits); on PostgreSQL the version of the node's
:class:`~pbxcore.tenancy.changes.ChangeFeed`, moved by each of the node's commits and by
each notification of a write on the channel ``pbx_changes`` (any node, the CLI, plain SQL:
a trigger sends it), with no query per read. A kept answer is used only while the version
is the one read before that answer was computed; committed data cannot change without the
version changing, so a kept answer is what the database gives now, on PostgreSQL as soon
as the notification of another node's write has arrived (``Database.caught_up()`` waits
for that). An answer may read only the tables that notify (migration 0006_change_notify).

Keys must name everything the answer depends on, the caller's scope included (see
:meth:`pbxcore.tenancy.store.Store.read_through`): an answer is never shared between
principals who may see different things.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["ReadCache"]


class ReadCache:
    """``key -> (data version, value)``; at most ``max_entries`` (then it starts over)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[object, Any]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, version: object) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, version: object, value: Any) -> None:
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.clear()
        self._entries[key] = (version, value)

    def clear(self) -> None:
        self._entries.clear()
