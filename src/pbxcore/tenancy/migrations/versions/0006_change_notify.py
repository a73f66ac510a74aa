"""PostgreSQL: every committed write to a configuration table sends NOTIFY pbx_changes

Each node LISTENs on the channel (pbxcore.tenancy.changes) and drops its kept read answers
when a notification arrives, whoever wrote: the API of any node, the CLI, plain SQL. A
statement-level trigger per table; the payload is the table's name. Not on the tables
written at call or request rate that no kept answer reads (sessions, cdrs, mail_outbox,
events).
SQLite: nothing (a node there watches PRAGMA data_version).

Revision ID: 0006_change_notify
Revises: 0005_prompts
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0006_change_notify"
down_revision = "0005_prompts"
branch_labels = None
depends_on = None

CHANNEL = "pbx_changes"
# the tables kept answers may read; a new such table adds its trigger in its migration
TABLES = (
    "operators",
    "users",
    "tenants",
    "extensions",
    "trunks",
    "route_tables",
    "routes",
    "dial_plans",
    "dids",
    "audit_log",
    "prompts",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION pbx_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER pbx_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION pbx_notify_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS pbx_notify_change ON {table}")
    op.execute("DROP FUNCTION IF EXISTS pbx_notify_change()")
