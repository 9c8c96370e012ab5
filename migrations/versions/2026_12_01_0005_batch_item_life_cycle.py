"""batch item life cycle, fair claim and resumable batch events

Items gain the states `claimed` (taken by a worker, nothing sent yet) and `generating` (the
model call may be in flight) in place of `running`; an item running before this migration
was generating. `generation_batch.last_claimed_at` orders the fair claim, and
`generation_batch.event_seq` / `generation_batch_item.event_seq` number a batch's events so
a stream can resume after any of them. The workers' queue index becomes per batch.

Revision ID: 0005
Revises: 0007
Create Date: 2026-12-01 00:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ITEM = "generation_batch_item"
CHECK = "ck_generation_batch_item_status_known"
OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')"
NEW_STATUSES = "status IN ('canceled', 'claimed', 'failed', 'generating', 'queued', 'succeeded')"
OLD_PENDING = sa.text("status IN ('queued', 'running')")
OPEN = sa.text("status IN ('claimed', 'generating', 'queued')")
LEASED = sa.text("status IN ('claimed', 'generating')")
NUMBERED = sa.text("event_seq IS NOT NULL")
UNNUMBERED = sa.text("event_seq IS NULL AND status IN ('canceled', 'failed', 'succeeded')")


def _set_check(check: str) -> None:
    with op.batch_alter_table(ITEM) as batch:
        batch.create_check_constraint("status_known", check)


def _drop_check() -> None:
    with op.batch_alter_table(ITEM) as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")


def upgrade() -> None:
    op.drop_index(
        "ix_generation_batch_item_pending",
        table_name=ITEM,
        postgresql_where=OLD_PENDING,
        sqlite_where=OLD_PENDING,
    )
    _drop_check()
    op.execute(f"UPDATE {ITEM} SET status = 'generating' WHERE status = 'running'")
    _set_check(NEW_STATUSES)
    op.add_column(ITEM, sa.Column("event_seq", sa.BigInteger(), nullable=True))
    op.add_column(
        "generation_batch",
        sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "generation_batch",
        sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_generation_batch_item_open",
        ITEM,
        ["batch_id", "index"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_generation_batch_item_leased",
        ITEM,
        ["claimed_by", "claimed_until"],
        postgresql_where=LEASED,
        sqlite_where=LEASED,
    )
    op.create_index(
        "ix_generation_batch_item_unnumbered",
        ITEM,
        ["batch_id"],
        postgresql_where=UNNUMBERED,
        sqlite_where=UNNUMBERED,
    )
    op.create_index(
        "ix_generation_batch_item_event_seq",
        ITEM,
        ["batch_id", "event_seq"],
        postgresql_where=NUMBERED,
        sqlite_where=NUMBERED,
    )


def downgrade() -> None:
    for name, where in (
        ("ix_generation_batch_item_event_seq", NUMBERED),
        ("ix_generation_batch_item_unnumbered", UNNUMBERED),
        ("ix_generation_batch_item_leased", LEASED),
        ("ix_generation_batch_item_open", OPEN),
    ):
        op.drop_index(name, table_name=ITEM, postgresql_where=where, sqlite_where=where)
    with op.batch_alter_table("generation_batch") as batch:
        batch.drop_column("event_seq")
        batch.drop_column("last_claimed_at")
    with op.batch_alter_table(ITEM) as batch:
        batch.drop_column("event_seq")
    _drop_check()
    op.execute(f"UPDATE {ITEM} SET status = 'running' WHERE status IN ('claimed', 'generating')")
    _set_check(OLD_STATUSES)
    op.create_index(
        "ix_generation_batch_item_pending",
        ITEM,
        ["status", "claimed_until"],
        postgresql_where=OLD_PENDING,
        sqlite_where=OLD_PENDING,
    )
