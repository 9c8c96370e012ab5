"""model usage and economy batches

Every generation and batch item records the priority it ran at (`standard`, or `economy`
through Anthropic's Message Batches API, at half the model cost); a batch records the
priority it was asked for. `provider_batch` is one Anthropic message batch of an economy
batch: its id persisted the moment Anthropic accepted it, so any instance polls and settles
it, also after the instance that submitted it died. Items name the message batch they were
sent in (`custom_id` `item-<item id>`).

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRIORITIES = "priority IN ('standard', 'economy')"
SUBMITTED = sa.text("status = 'submitted'")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in ("generation", "generation_batch", "generation_batch_item"):
        op.add_column(
            table,
            sa.Column("priority", sa.String(length=16), nullable=False, server_default="standard"),
        )
        if postgres:  # SQLite cannot add a CHECK to an existing table
            op.create_check_constraint(op.f(f"ck_{table}_priority_known"), table, PRIORITIES)
    op.create_table(
        "provider_batch",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('submitted', 'settled')", name=op.f("ck_provider_batch_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["generation_batch.id"],
            name=op.f("fk_provider_batch_batch_id_generation_batch"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_batch")),
    )
    op.create_index(op.f("ix_provider_batch_batch_id"), "provider_batch", ["batch_id"])
    op.create_index(
        "ix_provider_batch_submitted",
        "provider_batch",
        ["next_poll_at"],
        postgresql_where=SUBMITTED,
        sqlite_where=SUBMITTED,
    )
    op.add_column(
        "generation_batch_item",
        sa.Column("provider_batch_id", sa.String(length=100), nullable=True),
    )
    op.create_index(
        op.f("ix_generation_batch_item_provider_batch_id"),
        "generation_batch_item",
        ["provider_batch_id"],
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index(
        op.f("ix_generation_batch_item_provider_batch_id"), table_name="generation_batch_item"
    )
    with op.batch_alter_table("generation_batch_item") as batch:
        batch.drop_column("provider_batch_id")
    op.drop_index("ix_provider_batch_submitted", table_name="provider_batch")
    op.drop_index(op.f("ix_provider_batch_batch_id"), table_name="provider_batch")
    op.drop_table("provider_batch")
    for table in ("generation_batch_item", "generation_batch", "generation"):
        if postgres:
            op.drop_constraint(op.f(f"ck_{table}_priority_known"), table, type_="check")
        with op.batch_alter_table(table) as batch:
            batch.drop_column("priority")
