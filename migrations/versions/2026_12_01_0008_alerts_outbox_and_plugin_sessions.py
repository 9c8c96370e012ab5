"""alerts, outbox, support look-ups and plugin sessions

- `credit_balance.low_balance_threshold` (the account's alert setting, stamped from
  `LOW_BALANCE_THRESHOLD` when the account is opened; existing accounts get 50) and
  `credit_balance.alert_state` (`ok`, `low`, `depleted`: where the last change left the
  alerts), on the row every balance change locks, so crossings are judged under that lock;
- `outbound_event` (the transactional outbox) and `outbound_attempt` (every delivery try);
- `ledger_entry`: one credit-back per generation (unique), and `(account_id, created_at)`
  for usage and exports by date;
- `plugin_session`: the plugin's polling sign-in.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREDIT_BACK = "type = 'adjustment' AND generation_id IS NOT NULL"
PENDING = "status = 'pending'"


def upgrade() -> None:
    op.add_column(
        "credit_balance",
        sa.Column("low_balance_threshold", sa.BigInteger(), server_default="50", nullable=False),
    )
    op.add_column(
        "credit_balance",
        sa.Column("alert_state", sa.String(length=16), server_default="ok", nullable=False),
    )
    if op.get_context().dialect.name == "postgresql":
        # SQLite cannot add table constraints to an existing table; the code keeps to them.
        op.create_check_constraint(
            op.f("ck_credit_balance_threshold_in_range"),
            "credit_balance",
            "low_balance_threshold >= 0 AND low_balance_threshold <= 10000000",
        )
        op.create_check_constraint(
            op.f("ck_credit_balance_alert_state_known"),
            "credit_balance",
            "alert_state IN ('ok', 'low', 'depleted')",
        )
    op.create_index(
        "uq_ledger_entry_credit_back",
        "ledger_entry",
        ["generation_id"],
        unique=True,
        postgresql_where=sa.text(CREDIT_BACK),
        sqlite_where=sa.text(CREDIT_BACK),
    )
    op.create_index(
        "ix_ledger_entry_account_created_at", "ledger_entry", ["account_id", "created_at"]
    )

    op.create_table(
        "outbound_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_outbound_event_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_outbound_event_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_event")),
    )
    op.create_index(
        "ix_outbound_event_account_created_at", "outbound_event", ["account_id", "created_at"]
    )
    op.create_index(op.f("ix_outbound_event_created_at"), "outbound_event", ["created_at"])
    op.create_index(
        "ix_outbound_event_due",
        "outbound_event",
        ["next_attempt_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_table(
        "outbound_attempt",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbound_event.id"],
            name=op.f("fk_outbound_attempt_event_id_outbound_event"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_attempt")),
    )
    op.create_index(op.f("ix_outbound_attempt_event_id"), "outbound_attempt", ["event_id"])

    op.create_table(
        "plugin_session",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("read_key_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'claimed')",
            name=op.f("ck_plugin_session_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_plugin_session_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_key.id"], name=op.f("fk_plugin_session_api_key_id_api_key")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_session")),
    )
    op.create_index(op.f("ix_plugin_session_expires_at"), "plugin_session", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_plugin_session_expires_at"), table_name="plugin_session")
    op.drop_table("plugin_session")
    op.drop_index(op.f("ix_outbound_attempt_event_id"), table_name="outbound_attempt")
    op.drop_table("outbound_attempt")
    op.drop_index("ix_outbound_event_due", table_name="outbound_event")
    op.drop_index(op.f("ix_outbound_event_created_at"), table_name="outbound_event")
    op.drop_index("ix_outbound_event_account_created_at", table_name="outbound_event")
    op.drop_table("outbound_event")
    op.drop_index("ix_ledger_entry_account_created_at", table_name="ledger_entry")
    op.drop_index("uq_ledger_entry_credit_back", table_name="ledger_entry")
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(
            op.f("ck_credit_balance_alert_state_known"), "credit_balance", type_="check"
        )
        op.drop_constraint(
            op.f("ck_credit_balance_threshold_in_range"), "credit_balance", type_="check"
        )
    op.drop_column("credit_balance", "alert_state")
    op.drop_column("credit_balance", "low_balance_threshold")
