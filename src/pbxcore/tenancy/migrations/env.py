"""Alembic environment: runs on the connection :class:`pbxcore.tenancy.db.Database` gives it."""

from __future__ import annotations

from alembic import context

from pbxcore.tenancy.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the package always passes its connection
    raise RuntimeError("run migrations through pbxcore.tenancy.Database.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
