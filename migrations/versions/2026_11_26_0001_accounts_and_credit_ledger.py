"""accounts and credit ledger

Accounts, API keys, sites, balances, holds, the append-only ledger and idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 12:31:27.319022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subscription_status", sa.String(length=16), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("polar_subscription_id", sa.String(length=100), nullable=True),
        sa.Column("subscription_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_site_connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("email", name=op.f("uq_account_email")),
    )
    op.create_table(
        "idempotency_record",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("scope", "key", name="uq_idempotency_record_scope_key"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("lookup_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_api_key_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("lookup_id", name=op.f("uq_api_key_lookup_id")),
    )
    op.create_index(op.f("ix_api_key_account_id"), "api_key", ["account_id"], unique=False)

    op.create_table(
        "credit_balance",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("available >= 0", name=op.f("ck_credit_balance_available_non_negative")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_credit_balance_reserved_non_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_credit_balance_account_id_account")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_credit_balance")),
    )
    op.create_table(
        "credit_hold",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'settled', 'released', 'expired')",
            name=op.f("ck_credit_hold_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_hold_amount_positive")),
        sa.CheckConstraint(
            "consumed >= 0 AND consumed <= amount",
            name=op.f("ck_credit_hold_consumed_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_credit_hold_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_hold")),
    )
    op.create_index(op.f("ix_credit_hold_account_id"), "credit_hold", ["account_id"], unique=False)
    op.create_index(
        "ix_credit_hold_open_expires_at",
        "credit_hold",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )

    op.create_table(
        "ledger_entry",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("hold_id", sa.Uuid(), nullable=True),
        sa.Column("generation_id", sa.Uuid(), nullable=True),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("purchase_intent_id", sa.Uuid(), nullable=True),
        sa.Column("polar_order_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "type IN ('starter_grant', 'purchase', 'consumption', 'adjustment', 'refund_reversal')",
            name=op.f("ck_ledger_entry_type_known"),
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entry_amount_non_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_ledger_entry_account_id_account")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_entry_id")),
    )
    op.create_index(
        "ix_ledger_entry_account_seq", "ledger_entry", ["account_id", "seq"], unique=False
    )
    op.create_index(
        "uq_ledger_entry_consumption_hold",
        "ledger_entry",
        ["hold_id"],
        unique=True,
        postgresql_where=sa.text("type = 'consumption'"),
        sqlite_where=sa.text("type = 'consumption'"),
    )
    op.create_index(
        "uq_ledger_entry_purchase_order",
        "ledger_entry",
        ["polar_order_id"],
        unique=True,
        postgresql_where=sa.text("type = 'purchase'"),
        sqlite_where=sa.text("type = 'purchase'"),
    )
    op.create_index(
        "uq_ledger_entry_reversal_order",
        "ledger_entry",
        ["polar_order_id"],
        unique=True,
        postgresql_where=sa.text("type = 'refund_reversal'"),
        sqlite_where=sa.text("type = 'refund_reversal'"),
    )
    op.create_index(
        "uq_ledger_entry_starter_grant",
        "ledger_entry",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("type = 'starter_grant'"),
        sqlite_where=sa.text("type = 'starter_grant'"),
    )

    op.create_table(
        "site",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("framer_project_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_site_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
    )
    op.create_index(op.f("ix_site_account_id"), "site", ["account_id"], unique=False)
    op.create_index(
        "uq_site_live_project",
        "site",
        ["account_id", "framer_project_id"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )

    _forbid_ledger_changes()


LEDGER_APPEND_ONLY = "ledger_entry is append-only"


def _forbid_ledger_changes() -> None:
    """Entries are never updated or deleted, whatever code or person tries."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION ledger_entry_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '{LEDGER_APPEND_ONLY}';
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entry_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entry_no_{action.lower()} BEFORE {action} ON ledger_entry "
                f"BEGIN SELECT RAISE(ABORT, '{LEDGER_APPEND_ONLY}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_entry_append_only ON ledger_entry")
        op.execute("DROP FUNCTION ledger_entry_append_only()")
    else:
        op.execute("DROP TRIGGER ledger_entry_no_update")
        op.execute("DROP TRIGGER ledger_entry_no_delete")
    op.drop_index(
        "uq_site_live_project",
        table_name="site",
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_index(op.f("ix_site_account_id"), table_name="site")

    op.drop_table("site")
    op.drop_index(
        "uq_ledger_entry_starter_grant",
        table_name="ledger_entry",
        postgresql_where=sa.text("type = 'starter_grant'"),
        sqlite_where=sa.text("type = 'starter_grant'"),
    )
    op.drop_index(
        "uq_ledger_entry_reversal_order",
        table_name="ledger_entry",
        postgresql_where=sa.text("type = 'refund_reversal'"),
        sqlite_where=sa.text("type = 'refund_reversal'"),
    )
    op.drop_index(
        "uq_ledger_entry_purchase_order",
        table_name="ledger_entry",
        postgresql_where=sa.text("type = 'purchase'"),
        sqlite_where=sa.text("type = 'purchase'"),
    )
    op.drop_index(
        "uq_ledger_entry_consumption_hold",
        table_name="ledger_entry",
        postgresql_where=sa.text("type = 'consumption'"),
        sqlite_where=sa.text("type = 'consumption'"),
    )
    op.drop_index("ix_ledger_entry_account_seq", table_name="ledger_entry")

    op.drop_table("ledger_entry")
    op.drop_index(
        "ix_credit_hold_open_expires_at",
        table_name="credit_hold",
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )
    op.drop_index(op.f("ix_credit_hold_account_id"), table_name="credit_hold")

    op.drop_table("credit_hold")
    op.drop_table("credit_balance")
    op.drop_index(op.f("ix_api_key_account_id"), table_name="api_key")

    op.drop_table("api_key")
    op.drop_table("idempotency_record")
    op.drop_table("account")
