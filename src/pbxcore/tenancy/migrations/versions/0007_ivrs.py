"""ivrs: a tenant's voice menus (greeting, digit map, timeouts, default destination)

Revision ID: 0007_ivrs
Revises: 0006_change_notify
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_ivrs"
down_revision = "0006_change_notify"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ivrs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("greeting_prompt_id", sa.String(length=40), nullable=True),
        sa.Column("options", JSON, nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("invalid_prompt_id", sa.String(length=40), nullable=True),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("default_destination", JSON, nullable=True),
        sa.Column("direct_dial", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["greeting_prompt_id"],
            ["prompts.id"],
            name=op.f("fk_ivrs_greeting_prompt_id_prompts"),
        ),
        sa.ForeignKeyConstraint(
            ["invalid_prompt_id"], ["prompts.id"], name=op.f("fk_ivrs_invalid_prompt_id_prompts")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_ivrs_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ivrs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ivrs")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_ivrs_tenant_id_name")),
    )
    op.create_index(op.f("ix_ivrs_operator_id"), "ivrs", ["operator_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":  # the read caches follow it (0006)
        op.execute(
            "CREATE TRIGGER pbx_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            "ON ivrs FOR EACH STATEMENT EXECUTE FUNCTION pbx_notify_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS pbx_notify_change ON ivrs")
    op.drop_index(op.f("ix_ivrs_operator_id"), table_name="ivrs")
    op.drop_table("ivrs")
