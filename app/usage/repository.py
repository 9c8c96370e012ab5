"""SQL for usage (the `usage_day` rollup) and exports (one account's ledger by
`(account_id, created_at)`, `ix_ledger_entry_account_created_at`)."""

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.credits.models import LedgerEntry
from app.usage.models import UsageDay

EXPORT_COLUMNS = (
    "id",
    "created_at",
    "type",
    "amount",
    "balance_after",
    "description",
    "generation_id",
    "batch_id",
    "purchase_intent_id",
    "polar_order_id",
)


async def usage_buckets(
    session: AsyncSession, account_id: uuid.UUID, group_by: str, first: date, last: date
) -> list[tuple[str, int, int]]:
    """(key, credits, generations) per day, site or kind of the account's consumption on
    the UTC days `first`..`last`, keys ascending: from `usage_day` (its primary key starts
    with the account and the day), at most days x sites x kinds rows."""
    key = {"day": UsageDay.day, "site": UsageDay.site_id, "kind": UsageDay.kind}[group_by]
    statement = (
        select(key, func.sum(UsageDay.credits), func.sum(UsageDay.generations))
        .where(UsageDay.account_id == account_id, UsageDay.day >= first, UsageDay.day <= last)
        .group_by(key)
        .order_by(key)
    )
    rows = (await session.execute(statement)).all()
    return [(str(row[0]), int(row[1]), int(row[2])) for row in rows]


async def stream_entries(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    start: datetime | None,
    end: datetime | None,
    *,
    chunk: int,
) -> AsyncIterator[list[Row[Any]]]:
    """The account's entries oldest first, `chunk` rows at a time from a server-side cursor
    (constant memory, whatever the ledger's size)."""
    statement = select(*(getattr(LedgerEntry, name) for name in EXPORT_COLUMNS)).where(
        LedgerEntry.account_id == account_id
    )
    if start is not None:
        statement = statement.where(LedgerEntry.created_at >= start)
    if end is not None:
        statement = statement.where(LedgerEntry.created_at < end)
    statement = statement.order_by(LedgerEntry.created_at, LedgerEntry.seq)
    result = await connection.stream(statement.execution_options(yield_per=chunk))
    async for rows in result.partitions(chunk):
        yield list(rows)
