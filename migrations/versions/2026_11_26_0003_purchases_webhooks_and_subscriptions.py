"""purchases webhooks and subscriptions

Purchase intents (Polar checkouts), the webhook inbox and an index to find an account by its
Polar subscription.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_FIRST_TIME = "package_id = 'first_time' AND status IN ('pending', 'open')"


def upgrade() -> None:
    op.create_table(
        "purchase_intent",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("package_id", sa.String(length=32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("success_url", sa.Text(), nullable=True),
        sa.Column("polar_checkout_id", sa.String(length=100), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("polar_order_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'open', 'completed', 'expired', 'refunded')",
            name=op.f("ck_purchase_intent_status_known"),
        ),
        sa.CheckConstraint("credits > 0", name=op.f("ck_purchase_intent_credits_positive")),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_purchase_intent_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_purchase_intent_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_intent")),
        sa.UniqueConstraint("polar_checkout_id", name=op.f("uq_purchase_intent_polar_checkout_id")),
        sa.UniqueConstraint("polar_order_id", name=op.f("uq_purchase_intent_polar_order_id")),
    )
    op.create_index(
        op.f("ix_purchase_intent_account_id"), "purchase_intent", ["account_id"], unique=False
    )
    op.create_index(
        "uq_purchase_intent_live_first_time",
        "purchase_intent",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text(LIVE_FIRST_TIME),
        sqlite_where=sa.text(LIVE_FIRST_TIME),
    )

    op.create_table(
        "webhook_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("webhook_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_event")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_webhook_event_webhook_id")),
    )

    op.create_index(
        op.f("ix_account_polar_subscription_id"),
        "account",
        ["polar_subscription_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_account_polar_subscription_id"), table_name="account")
    op.drop_table("webhook_event")
    op.drop_index(
        "uq_purchase_intent_live_first_time",
        table_name="purchase_intent",
        postgresql_where=sa.text(LIVE_FIRST_TIME),
        sqlite_where=sa.text(LIVE_FIRST_TIME),
    )
    op.drop_index(op.f("ix_purchase_intent_account_id"), table_name="purchase_intent")
    op.drop_table("purchase_intent")
