"""SQL for generations, batches and the batch workers' queue. Callers own the transaction."""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import alerts
from app.credits.repository import RATE_TOKENS
from app.generation import lifecycle
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem

ACTIVE_BATCH_STATUSES = ("queued", "running")


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


async def add_batch(
    session: AsyncSession, batch: GenerationBatch, items: Sequence[dict[str, Any]]
) -> None:
    session.add(batch)
    await session.flush()
    await session.execute(insert(GenerationBatchItem), list(items))


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


# --- the single generation's fast path on PostgreSQL (asyncpg, `app.db.StatementRunner`) ---
#
# Each statement is atomic on its own and does, in one round trip, what the ORM path does in
# several; on anything unusual it changes nothing and returns no row, and the caller takes
# the ORM path, which knows every rule and error. The balance row is locked only inside
# the statement, so a hot account is serialized by PostgreSQL alone, not by round trips.

RESERVE_GENERATION_SQL = """
WITH usable_site AS (
    SELECT id FROM site WHERE id = $2::uuid AND account_id = $1::uuid AND deleted_at IS NULL
), balance AS (
    UPDATE credit_balance
    SET available = available - 1, reserved = reserved + 1, updated_at = $6::timestamptz,
        rate_tokens = {tokens} - 1, rate_updated_at = $6
    WHERE account_id = $1 AND available >= 1 AND EXISTS (SELECT 1 FROM usable_site)
      AND {tokens} >= 1
      AND /*alerts*/ (ALERT_STATE_AFTER_RESERVE) = alert_state
    RETURNING account_id
), hold AS (
    INSERT INTO credit_hold (id, account_id, amount, consumed, status, reference, created_at,
                             expires_at)
    SELECT $4::uuid, account_id, 1, 0, 'open', 'generation:' || $3::uuid::text, $6,
           $7::timestamptz
    FROM balance
    RETURNING id
), generation AS (
    INSERT INTO generation (id, account_id, site_id, kind, status, input, hold_id, expires_at,
                            idempotency_record_id, credits_charged, created_at)
    SELECT $3, $1, $2, $5::text, 'running', $8::text::json, id, $7, $9::bigint, 0, $6
    FROM hold
    RETURNING id
)
SELECT pg_notify($10::text, $1::text) FROM generation
""".format(tokens=RATE_TOKENS.format(now="$6", rate="$11::float8", burst="$12::float8"))
RESERVE_GENERATION_SQL = RESERVE_GENERATION_SQL.replace(
    "ALERT_STATE_AFTER_RESERVE", alerts.next_state_sql("available - 1")
)
"""$1 account, $2 site, $3 generation id, $4 hold id, $5 kind, $6 now, $7 expires at,
$8 input (JSON text), $9 idempotency record id or NULL, $10 the balance channel, $11 the
rate bucket's refill per second, $12 its burst. One row when reserved (a token of the
account's rate bucket taken with the credit); none when the site, the balance, the bucket
or anything else says no, and none when this credit would move the balance alerts
(`app.credits.alerts`): a crossing is judged and its event recorded by the ORM path, in its
transaction, under the same row lock. (The charge moves `reserved` only, so it never
crosses.)"""
CHARGE_GENERATION_SQL = """
WITH running AS (
    SELECT id FROM generation WHERE id = $1::uuid AND status = 'running' FOR UPDATE
), hold AS (
    UPDATE credit_hold SET status = 'settled', consumed = 1, resolved_at = $3::timestamptz
    WHERE id = $2::uuid AND status = 'open' AND expires_at > $3 AND amount = 1
      AND EXISTS (SELECT 1 FROM running)
    RETURNING account_id
), generation AS (
    UPDATE generation
    SET status = 'succeeded', output = $4::text::json, credits_charged = 1, completed_at = $3,
        model = $5::text, input_tokens = $6::int, output_tokens = $7::int, latency_ms = $8::int
    WHERE id = $1 AND EXISTS (SELECT 1 FROM hold)
    RETURNING account_id
), balance AS (
    UPDATE credit_balance SET reserved = reserved - 1, updated_at = $3
    WHERE account_id = (SELECT account_id FROM generation)
    RETURNING account_id, available, reserved
), entry AS (
    INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description,
                              hold_id, generation_id, created_at)
    SELECT $9::uuid, account_id, 'consumption', -1, available + reserved, $10::text, $2, $1,
           $3
    FROM balance
    RETURNING account_id
)
SELECT balance.available, balance.reserved, pg_notify($11::text, balance.account_id::text)
FROM balance JOIN entry ON entry.account_id = balance.account_id
"""
"""$1 generation, $2 its hold, $3 now, $4 output (JSON text), $5 model, $6 input tokens,
$7 output tokens, $8 latency ms, $9 ledger entry id, $10 description, $11 the balance
channel. One row (the balance after) when charged; none when the generation is no longer
running or its hold is not open and unexpired (the ORM path then decides)."""

CLAIM_IDEMPOTENCY_KEY_SQL = """
INSERT INTO idempotency_record (scope, key, fingerprint, created_at)
VALUES ($1::text, $2::text, $3::text, $4::timestamptz)
ON CONFLICT (scope, key) DO NOTHING
RETURNING id
"""

COMPLETE_IDEMPOTENCY_KEY_SQL = """
UPDATE idempotency_record
SET status_code = $2::int, response_body = $3::text::json, completed_at = $4::timestamptz
WHERE id = $1::bigint
"""
