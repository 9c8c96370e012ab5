"""the generations rate bucket in the balance row

On PostgreSQL the per-account token bucket of generation requests lives in the account's
`credit_balance` row, so it holds across every worker process and instance: a
generation's reserve statement refills it and takes a token in the same `UPDATE` that
moves the credit. NULL means a full bucket (never used).

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-01 00:06:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("credit_balance", sa.Column("rate_tokens", sa.Float(), nullable=True))
    op.add_column(
        "credit_balance", sa.Column("rate_updated_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("credit_balance", "rate_updated_at")
    op.drop_column("credit_balance", "rate_tokens")
