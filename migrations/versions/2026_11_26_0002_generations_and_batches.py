"""generations and batches

Single generations, generation batches and their items (the batch workers' queue).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('meta_title', 'meta_description', 'alt_text', 'schema')"
RUNNING = sa.text("status = 'running'")
PENDING = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table(
        "generation",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_record_id", sa.BigInteger(), nullable=True),
        sa.Column("credits_charged", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(KINDS, name=op.f("ck_generation_kind_known")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_generation_status_known")
        ),
        sa.CheckConstraint(
            "credits_charged IN (0, 1)", name=op.f("ck_generation_credits_charged_zero_or_one")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_generation_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["idempotency_record_id"],
            ["idempotency_record.id"],
            name=op.f("fk_generation_idempotency_record_id_idempotency_record"),
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_generation_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_generation_hold_id")),
        sa.UniqueConstraint(
            "idempotency_record_id", name=op.f("uq_generation_idempotency_record_id")
        ),
    )
    op.create_index(op.f("ix_generation_account_id"), "generation", ["account_id"])
    op.create_index(
        "ix_generation_running_expires_at",
        "generation",
        ["expires_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )

    op.create_table(
        "generation_batch",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(KINDS, name=op.f("ck_generation_batch_kind_known")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'canceled')",
            name=op.f("ck_generation_batch_status_known"),
        ),
        sa.CheckConstraint("total > 0", name=op.f("ck_generation_batch_total_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_generation_batch_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_generation_batch_site_id_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_batch")),
    )
    op.create_index(op.f("ix_generation_batch_account_id"), "generation_batch", ["account_id"])
    op.create_index(
        "ix_generation_batch_active",
        "generation_batch",
        ["created_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )

    op.create_table(
        "generation_batch_item",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("credits_charged", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')",
            name=op.f("ck_generation_batch_item_status_known"),
        ),
        sa.CheckConstraint(
            "credits_charged IN (0, 1)",
            name=op.f("ck_generation_batch_item_credits_charged_zero_or_one"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["generation_batch.id"],
            name=op.f("fk_generation_batch_item_batch_id_generation_batch"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_batch_item")),
        sa.UniqueConstraint("batch_id", "index", name="uq_generation_batch_item_batch_id_index"),
        sa.UniqueConstraint("hold_id", name=op.f("uq_generation_batch_item_hold_id")),
    )
    op.create_index(
        "ix_generation_batch_item_pending",
        "generation_batch_item",
        ["status", "claimed_until"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_generation_batch_item_pending",
        table_name="generation_batch_item",
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.drop_table("generation_batch_item")
    op.drop_index(
        "ix_generation_batch_active",
        table_name="generation_batch",
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.drop_index(op.f("ix_generation_batch_account_id"), table_name="generation_batch")
    op.drop_table("generation_batch")
    op.drop_index(
        "ix_generation_running_expires_at",
        table_name="generation",
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.drop_index(op.f("ix_generation_account_id"), table_name="generation")
    op.drop_table("generation")
