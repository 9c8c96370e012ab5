"""SQL for usage and exports. Both read one account's ledger by `(account_id,
created_at)` (`ix_ledger_entry_account_created_at`)."""

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import Date, Row, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.credits.models import LedgerEntry
from app.generation.models import Generation, GenerationBatch

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


def _day(session: AsyncSession) -> Any:
    """The UTC date of an entry, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", LedgerEntry.created_at), Date)
    return func.date(LedgerEntry.created_at)  # SQLite stores UTC as naive text


async def consumption_buckets(
    session: AsyncSession,
    account_id: uuid.UUID,
    group_by: str,
    start: datetime,
    end: datetime,
) -> list[tuple[str, int, int]]:
    """(key, credits, generations) per bucket of the account's `consumption` entries in
    `[start, end)`, keys ascending. A single generation's entry carries its id, a batch
    item's its batch: `site` and `kind` come from them."""
    if group_by == "day":
        key: Any = _day(session)
        statement = select(key.label("key"), func.sum(LedgerEntry.amount), func.count())
    else:
        single, batch = (
            (Generation.site_id, GenerationBatch.site_id)
            if group_by == "site"
            else (Generation.kind, GenerationBatch.kind)
        )
        key = func.coalesce(single, batch)
        statement = (
            select(key.label("key"), func.sum(LedgerEntry.amount), func.count())
            .outerjoin(Generation, Generation.id == LedgerEntry.generation_id)
            .outerjoin(GenerationBatch, GenerationBatch.id == LedgerEntry.batch_id)
        )
    statement = (
        statement.where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end,
            LedgerEntry.type == "consumption",
        )
        .group_by(key)
        .order_by(key)
    )
    rows = (await session.execute(statement)).all()
    return [(str(row[0]), -int(row[1]), int(row[2])) for row in rows]


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
