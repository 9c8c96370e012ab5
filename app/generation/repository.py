"""SQL for generations, batches and the batch workers' queue. Callers own the transaction."""

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import statements
from app.generation import lifecycle
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem

ACTIVE_BATCH_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class NewItem:
    """A batch item to insert: its position, input and credit hold."""

    index: int
    input: dict[str, Any]
    hold_id: uuid.UUID


async def add_generation(session: AsyncSession, generation: Generation) -> None:
    session.add(generation)
    await session.flush()


async def get_generation(
    session: AsyncSession, account_id: uuid.UUID, generation_id: uuid.UUID
) -> Generation | None:
    generation = await session.get(Generation, generation_id, populate_existing=True)
    if generation is None or generation.account_id != account_id:
        return None
    return generation


async def lock_generation(session: AsyncSession, generation_id: uuid.UUID) -> Generation:
    return (
        await session.execute(
            select(Generation)
            .where(Generation.id == generation_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def lock_interrupted_generations(
    session: AsyncSession, now: datetime, limit: int
) -> list[Generation]:
    """Generations still running when their hold ran out: their process died or hung."""
    statement = (
        select(Generation)
        .where(Generation.status == "running", Generation.expires_at <= now)
        .order_by(Generation.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def lock_running_generations(
    session: AsyncSession, generation_ids: Sequence[uuid.UUID]
) -> list[Generation]:
    """Those of the generations that are still running, locked (in id order)."""
    if not generation_ids:
        return []
    statement = (
        select(Generation)
        .where(Generation.id.in_(generation_ids), Generation.status == "running")
        .order_by(Generation.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


_ADD_ITEMS = text(
    "INSERT INTO generation_batch_item "
    "(batch_id, index, input, status, hold_id, credits_charged, attempts, priority) "
    "SELECT :batch_id, i.index, CAST(i.input AS json), 'queued', i.hold_id, 0, 0, :priority "
    "FROM unnest(CAST(:indexes AS integer[]), CAST(:inputs AS text[]), "
    "CAST(:hold_ids AS uuid[])) AS i(index, input, hold_id)"
).bindparams(bindparam("batch_id", type_=GenerationBatchItem.batch_id.type))


async def add_batch(
    session: AsyncSession, batch: GenerationBatch, items: Sequence[NewItem]
) -> None:
    """The batch and its queued items. On PostgreSQL the items go as three arrays
    (`unnest`) instead of a parameter per column and item: a 500-item batch's insert took a
    third of its `POST` (docs/benchmarks.md)."""
    session.add(batch)
    await session.flush()
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            _ADD_ITEMS,
            {
                "batch_id": batch.id,
                "priority": batch.priority,
                "indexes": [item.index for item in items],
                "inputs": [json.dumps(item.input) for item in items],
                "hold_ids": [item.hold_id for item in items],
            },
        )
        return
    rows = [
        {
            "batch_id": batch.id,
            "index": item.index,
            "input": item.input,
            "status": "queued",
            "hold_id": item.hold_id,
            "credits_charged": 0,
            "attempts": 0,
            "priority": batch.priority,
        }
        for item in items
    ]
    await session.execute(insert(GenerationBatchItem), rows)


async def get_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> GenerationBatch | None:
    batch = await session.get(GenerationBatch, batch_id, populate_existing=True)
    if batch is None or batch.account_id != account_id:
        return None
    return batch


async def lock_batch(session: AsyncSession, batch_id: uuid.UUID) -> GenerationBatch:
    return (
        await session.execute(
            select(GenerationBatch)
            .where(GenerationBatch.id == batch_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def item_counts(session: AsyncSession, batch_id: uuid.UUID) -> dict[str, int]:
    """Items per published status."""
    rows = await session.execute(
        select(GenerationBatchItem.status, func.count())
        .where(GenerationBatchItem.batch_id == batch_id)
        .group_by(GenerationBatchItem.status)
    )
    counts: dict[str, int] = defaultdict(int)
    for status, count in rows.all():
        counts[lifecycle.published(status)] += count
    return dict(counts)


async def list_items(session: AsyncSession, batch_id: uuid.UUID) -> list[GenerationBatchItem]:
    statement = (
        select(GenerationBatchItem)
        .where(GenerationBatchItem.batch_id == batch_id)
        .order_by(GenerationBatchItem.index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


# --- the generation's part of the single generation's fast path (`app.generation.fast_path`) ---
#
# The credit parts (the hold, the balance, the ledger entry, the notification) are the
# ledger's (`app.credits.statements`); these are the `generation` row's, spliced in.

RESERVE_GENERATION_SQL = statements.reserve_one_sql(
    account_id="$1",
    hold_id="$4",
    reference="'generation:' || $3::uuid::text",
    now="$6",
    expires_at="$7",
    rate="$11",
    burst="$12",
    channel="$10",
    before="""usable_site AS (
    SELECT id FROM site WHERE id = $2::uuid AND account_id = $1::uuid AND deleted_at IS NULL
)""",
    precondition="EXISTS (SELECT 1 FROM usable_site)",
    owner="""generation AS (
    INSERT INTO generation (id, account_id, site_id, kind, status, input, hold_id, expires_at,
                            idempotency_record_id, credits_charged, created_at)
    SELECT $3::uuid, $1::uuid, $2::uuid, $5::text, 'running', $8::text::json, id,
           $7::timestamptz, $9::bigint, 0, $6::timestamptz
    FROM hold
    RETURNING id
)""",
)
"""$1 account, $2 site, $3 generation id, $4 hold id, $5 kind, $6 now, $7 expires at,
$8 input (JSON text), $9 idempotency record id or NULL, $10 the balance channel, $11 the
rate bucket's refill per second, $12 its burst. One row when reserved (a token of the
account's rate bucket taken with the credit) and the generation `running`; none when the
site, the balance, the bucket or the alerts say no (`statements.reserve_one_sql`)."""

CHARGE_GENERATION_SQL = statements.settle_one_sql(
    hold_id="$2",
    now="$3",
    entry_id="$9",
    description="$10",
    generation_id="$1",
    channel="$11",
    before="""running AS (
    SELECT id FROM generation WHERE id = $1::uuid AND status = 'running' FOR UPDATE
)""",
    precondition="EXISTS (SELECT 1 FROM running)",
    owner="""generation AS (
    UPDATE generation
    SET status = 'succeeded', output = $4::text::json, credits_charged = 1,
        completed_at = $3::timestamptz, model = $5::text, input_tokens = $6::int,
        output_tokens = $7::int, latency_ms = $8::int
    WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM hold)
    RETURNING account_id
)""",
)
"""$1 generation, $2 its hold, $3 now, $4 output (JSON text), $5 model, $6 input tokens,
$7 output tokens, $8 latency ms, $9 ledger entry id, $10 description, $11 the balance
channel. One row (the balance after) when charged; none when the generation is no longer
running or its hold is not open and unexpired (the ORM path then decides)."""
