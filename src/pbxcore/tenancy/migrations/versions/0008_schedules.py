"""schedules: a tenant's business hours (weekly periods, holidays, open/closed destinations)

Revision ID: 0008_schedules
Revises: 0007_ivrs
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_schedules"
down_revision = "0007_ivrs"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("weekly", JSON, nullable=False),
        sa.Column("holidays", JSON, nullable=False),
        sa.Column("open_destination", JSON, nullable=True),
        sa.Column("closed_destination", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_schedules_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_schedules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_schedules_tenant_id_name")),
    )
    op.create_index(op.f("ix_schedules_operator_id"), "schedules", ["operator_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":  # the read caches follow it (0006)
        op.execute(
            "CREATE TRIGGER pbx_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            "ON schedules FOR EACH STATEMENT EXECUTE FUNCTION pbx_notify_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS pbx_notify_change ON schedules")
    op.drop_index(op.f("ix_schedules_operator_id"), table_name="schedules")
    op.drop_table("schedules")
