"""alerts, outbox, support look-ups and plugin sessions

- `credit_balance.low_balance_threshold` (the account's alert setting, stamped from
  `LOW_BALANCE_THRESHOLD` when the account is opened; existing accounts get 50) and
  `credit_balance.alert_state` (`ok`, `low`, `depleted`: where the last change left the
  alerts), on the row every balance change locks, so crossings are judged under that lock;
- `outbound_event` (the transactional outbox) and `outbound_attempt` (every delivery try);
- `ledger_entry`: one credit-back per generation (unique), and `(account_id, created_at)`
  for usage and exports by date;
- `plugin_session`: the plugin's polling sign-in;
- `usage_day`: consumption per account, UTC day, site and kind, kept by a trigger on
  `ledger_entry` inserts (backfilled from the existing ledger).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
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

    op.create_table(
        "usage_day",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("generations", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_usage_day_account_id_account")
        ),
        sa.PrimaryKeyConstraint("account_id", "day", "site_id", "kind", name=op.f("pk_usage_day")),
    )
    _count_usage()


# The site and kind of a consumption entry: its single generation's, or its batch's.
_GENERATION_OF_ENTRY = """
    SELECT site_id, kind FROM generation WHERE id = NEW.generation_id
    UNION ALL
    SELECT site_id, kind FROM generation_batch
    WHERE id = NEW.batch_id AND NEW.generation_id IS NULL
"""


def _count_usage() -> None:
    """Every consumption entry counted into `usage_day` by the insert that writes it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION usage_day_count() RETURNS trigger AS $$
            BEGIN
                INSERT INTO usage_day (account_id, day, site_id, kind, credits, generations)
                SELECT NEW.account_id, (NEW.created_at AT TIME ZONE 'UTC')::date,
                       of_entry.site_id, of_entry.kind, -NEW.amount, 1
                FROM ({_GENERATION_OF_ENTRY}) AS of_entry
                LIMIT 1
                ON CONFLICT (account_id, day, site_id, kind) DO UPDATE
                SET credits = usage_day.credits + EXCLUDED.credits,
                    generations = usage_day.generations + 1;
                RETURN NULL;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER usage_day_count AFTER INSERT ON ledger_entry FOR EACH ROW "
            "WHEN (NEW.type = 'consumption') EXECUTE FUNCTION usage_day_count()"
        )
        day = "(ledger_entry.created_at AT TIME ZONE 'UTC')::date"
    else:
        op.execute(
            f"""
            CREATE TRIGGER usage_day_count AFTER INSERT ON ledger_entry FOR EACH ROW
            WHEN NEW.type = 'consumption'
            BEGIN
                INSERT INTO usage_day (account_id, day, site_id, kind, credits, generations)
                SELECT NEW.account_id, date(NEW.created_at), site_id, kind, -NEW.amount, 1
                FROM ({_GENERATION_OF_ENTRY}) WHERE true
                LIMIT 1
                ON CONFLICT (account_id, day, site_id, kind) DO UPDATE
                SET credits = credits + excluded.credits, generations = generations + 1;
            END
            """
        )
        day = "date(ledger_entry.created_at)"
    # What the ledger already holds.
    op.execute(
        f"""
        INSERT INTO usage_day (account_id, day, site_id, kind, credits, generations)
        SELECT ledger_entry.account_id, {day},
               COALESCE(generation.site_id, generation_batch.site_id),
               COALESCE(generation.kind, generation_batch.kind),
               -SUM(ledger_entry.amount), COUNT(*)
        FROM ledger_entry
        LEFT JOIN generation ON generation.id = ledger_entry.generation_id
        LEFT JOIN generation_batch ON generation_batch.id = ledger_entry.batch_id
            AND ledger_entry.generation_id IS NULL
        WHERE ledger_entry.type = 'consumption'
          AND COALESCE(generation.site_id, generation_batch.site_id) IS NOT NULL
        GROUP BY ledger_entry.account_id, {day},
                 COALESCE(generation.site_id, generation_batch.site_id),
                 COALESCE(generation.kind, generation_batch.kind)
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER usage_day_count ON ledger_entry")
        op.execute("DROP FUNCTION usage_day_count()")
    else:
        op.execute("DROP TRIGGER usage_day_count")
    op.drop_table("usage_day")
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
