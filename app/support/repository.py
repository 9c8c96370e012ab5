"""SQL for support look-ups: single generations and batch items as one list. Callers own
the transaction.

A batch item has no id of its own beyond its row number; its public id is the id of its
credit hold, unique per item and already on its `consumption` ledger entry."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, and_, literal, null, or_, select, type_coerce, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits.models import LedgerEntry
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem


def _singles() -> Any:
    return select(
        Generation.id.label("id"),
        Generation.account_id.label("account_id"),
        Generation.site_id.label("site_id"),
        type_coerce(null(), Uuid()).label("batch_id"),
        Generation.kind.label("kind"),
        Generation.status.label("status"),
        Generation.credits_charged.label("credits_charged"),
        Generation.model.label("model"),
        Generation.input_tokens.label("input_tokens"),
        Generation.output_tokens.label("output_tokens"),
        Generation.latency_ms.label("latency_ms"),
        Generation.error_code.label("error_code"),
        Generation.created_at.label("created_at"),
        Generation.completed_at.label("completed_at"),
        Generation.hold_id.label("hold_id"),
        literal(False).label("in_batch"),
    )


def _items() -> Any:
    return select(
        GenerationBatchItem.hold_id.label("id"),
        GenerationBatch.account_id.label("account_id"),
        GenerationBatch.site_id.label("site_id"),
        GenerationBatch.id.label("batch_id"),
        GenerationBatch.kind.label("kind"),
        GenerationBatchItem.status.label("status"),
        GenerationBatchItem.credits_charged.label("credits_charged"),
        GenerationBatchItem.model.label("model"),
        GenerationBatchItem.input_tokens.label("input_tokens"),
        GenerationBatchItem.output_tokens.label("output_tokens"),
        GenerationBatchItem.latency_ms.label("latency_ms"),
        GenerationBatchItem.error_code.label("error_code"),
        GenerationBatch.created_at.label("created_at"),
        GenerationBatchItem.finished_at.label("completed_at"),
        GenerationBatchItem.hold_id.label("hold_id"),
        literal(True).label("in_batch"),
    ).join(GenerationBatch, GenerationBatch.id == GenerationBatchItem.batch_id)


async def list_generations(
    session: AsyncSession,
    *,
    account_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    status: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Any]:
    """Both kinds, newest first (`created_at`, then id)."""
    singles, items = _singles(), _items()
    if account_id is not None:
        singles = singles.where(Generation.account_id == account_id)
        items = items.where(GenerationBatch.account_id == account_id)
    if created_from is not None:
        singles = singles.where(Generation.created_at >= created_from)
        items = items.where(GenerationBatch.created_at >= created_from)
    if created_to is not None:
        singles = singles.where(Generation.created_at <= created_to)
        items = items.where(GenerationBatch.created_at <= created_to)
    if status is not None:
        singles = singles.where(Generation.status == status)
        items = items.where(GenerationBatchItem.status == status)
    both = union_all(singles, items).subquery()
    statement = select(both)
    if before is not None:
        created_at, row_id = before
        statement = statement.where(
            or_(
                both.c.created_at < created_at,
                and_(both.c.created_at == created_at, both.c.id < row_id),
            )
        )
    statement = statement.order_by(both.c.created_at.desc(), both.c.id.desc()).limit(limit)
    return list((await session.execute(statement)).all())


async def find_generation(session: AsyncSession, generation_id: uuid.UUID) -> Any | None:
    """A single generation or a batch item by its public id."""
    single = (await session.execute(_singles().where(Generation.id == generation_id))).one_or_none()
    if single is not None:
        return single
    return (
        await session.execute(_items().where(GenerationBatchItem.hold_id == generation_id))
    ).one_or_none()


async def ledger_entries(
    session: AsyncSession, account_id: uuid.UUID, generation_id: uuid.UUID, hold_id: uuid.UUID
) -> list[LedgerEntry]:
    """Its consumption (by its hold) and any credit-back (by its id), oldest first."""
    statement = (
        select(LedgerEntry)
        .where(
            LedgerEntry.account_id == account_id,
            or_(
                and_(LedgerEntry.type == "consumption", LedgerEntry.hold_id == hold_id),
                and_(LedgerEntry.type == "adjustment", LedgerEntry.generation_id == generation_id),
            ),
        )
        .order_by(LedgerEntry.seq)
    )
    return list((await session.execute(statement)).scalars())


async def credit_back_exists(session: AsyncSession, generation_id: uuid.UUID) -> bool:
    statement = select(LedgerEntry.seq).where(
        LedgerEntry.type == "adjustment", LedgerEntry.generation_id == generation_id
    )
    return (await session.execute(statement.limit(1))).first() is not None
