"""refund reversals per refund level

An order refunded in several steps (a partial refund, then more) has one reversal per
refund level: `ledger_entry.refunded_cents` is the order's cumulative refunded amount the
reversal brought the account to, unique per order. Reversals written before this column
(NULL) stand for the whole order, as the one-reversal-per-order rule they were written under.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVERSAL = "type = 'refund_reversal'"


def upgrade() -> None:
    op.add_column("ledger_entry", sa.Column("refunded_cents", sa.BigInteger(), nullable=True))
    op.drop_index("uq_ledger_entry_reversal_order", table_name="ledger_entry")
    op.create_index(
        "uq_ledger_entry_reversal_order_level",
        "ledger_entry",
        ["polar_order_id", "refunded_cents"],
        unique=True,
        postgresql_where=sa.text(REVERSAL),
        sqlite_where=sa.text(REVERSAL),
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_entry_reversal_order_level", table_name="ledger_entry")
    op.create_index(
        "uq_ledger_entry_reversal_order",
        "ledger_entry",
        ["polar_order_id"],
        unique=True,
        postgresql_where=sa.text(REVERSAL),
        sqlite_where=sa.text(REVERSAL),
    )
    op.drop_column("ledger_entry", "refunded_cents")
