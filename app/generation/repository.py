"""SQL for generations, batches and the batch workers' queue. Callers own the transaction."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import alerts
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem

FINISHED_ITEM_STATUSES = ("succeeded", "failed", "canceled")
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
    rows = await session.execute(
        select(GenerationBatchItem.status, func.count())
        .where(GenerationBatchItem.batch_id == batch_id)
        .group_by(GenerationBatchItem.status)
    )
    return {status: count for status, count in rows.all()}


async def list_items(session: AsyncSession, batch_id: uuid.UUID) -> list[GenerationBatchItem]:
    statement = (
        select(GenerationBatchItem)
        .where(GenerationBatchItem.batch_id == batch_id)
        .order_by(GenerationBatchItem.index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def finished_item_indexes(session: AsyncSession, batch_id: uuid.UUID) -> list[int]:
    statement = select(GenerationBatchItem.index).where(
        GenerationBatchItem.batch_id == batch_id,
        GenerationBatchItem.status.in_(FINISHED_ITEM_STATUSES),
    )
    return list((await session.execute(statement)).scalars())


async def items_by_index(
    session: AsyncSession, batch_id: uuid.UUID, indexes: Sequence[int]
) -> list[GenerationBatchItem]:
    """The given items, in the order they finished."""
    statement = (
        select(GenerationBatchItem)
        .where(GenerationBatchItem.batch_id == batch_id, GenerationBatchItem.index.in_(indexes))
        .order_by(GenerationBatchItem.finished_at, GenerationBatchItem.index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def claim_items(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[GenerationBatchItem, GenerationBatch]]:
    """Lock up to `limit` items to work on, oldest batch first: items queued (and not
    waiting out a provider's Retry-After), or running under a lease nobody renewed.

    On PostgreSQL `SKIP LOCKED` lets every worker of every instance take different items
    without waiting; on SQLite `BEGIN IMMEDIATE` already serialized the transaction."""
    statement = (
        select(GenerationBatchItem, GenerationBatch)
        .join(GenerationBatch, GenerationBatch.id == GenerationBatchItem.batch_id)
        .where(
            # Economy items go to the Message Batches API (`app.generation.economy`).
            GenerationBatch.priority == "standard",
            or_(
                and_(
                    GenerationBatchItem.status == "queued",
                    or_(
                        GenerationBatchItem.claimed_until.is_(None),
                        GenerationBatchItem.claimed_until <= now,
                    ),
                ),
                and_(
                    GenerationBatchItem.status == "running",
                    GenerationBatchItem.claimed_until <= now,
                ),
            ),
        )
        .order_by(
            GenerationBatch.created_at, GenerationBatchItem.batch_id, GenerationBatchItem.index
        )
        .limit(limit)
        .with_for_update(of=GenerationBatchItem, skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]


async def start_items(
    session: AsyncSession,
    item_ids: Sequence[int],
    *,
    instance_id: str,
    claim_token: uuid.UUID,
    claimed_until: datetime,
) -> None:
    """Mark locked items running under this claim."""
    await session.execute(
        update(GenerationBatchItem)
        .where(GenerationBatchItem.id.in_(item_ids))
        .values(
            status="running",
            claimed_by=instance_id,
            claim_token=claim_token,
            claimed_until=claimed_until,
            attempts=GenerationBatchItem.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )


async def update_claimed_item(
    session: AsyncSession, item_id: int, owner_token: uuid.UUID, **values: Any
) -> uuid.UUID | None:
    """Update the item if the claim `owner_token` still owns it (locking it); its hold, else
    `None`."""
    row = await session.execute(
        update(GenerationBatchItem)
        .where(
            GenerationBatchItem.id == item_id,
            GenerationBatchItem.claim_token == owner_token,
            GenerationBatchItem.status == "running",
        )
        .values(**values)
        .returning(GenerationBatchItem.hold_id)
        .execution_options(synchronize_session=False)
    )
    return row.scalar_one_or_none()


async def lock_items(
    session: AsyncSession, item_ids: Sequence[int]
) -> dict[int, GenerationBatchItem]:
    """Lock the items, in id order (as every multi-item locker here does)."""
    statement = (
        select(GenerationBatchItem)
        .where(GenerationBatchItem.id.in_(item_ids))
        .order_by(GenerationBatchItem.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {item.id: item for item in (await session.execute(statement)).scalars()}


async def mark_batch_running(session: AsyncSession, batch_id: uuid.UUID) -> None:
    await session.execute(
        update(GenerationBatch)
        .where(GenerationBatch.id == batch_id, GenerationBatch.status == "queued")
        .values(status="running")
        .execution_options(synchronize_session=False)
    )


async def complete_batch_if_done(session: AsyncSession, batch_id: uuid.UUID, now: datetime) -> bool:
    """Mark the batch completed once no item is queued or running. Run after the item's own
    commit: of two workers finishing the last two items, the later one sees both."""
    pending = exists().where(
        GenerationBatchItem.batch_id == batch_id,
        GenerationBatchItem.status.in_(("queued", "running")),
    )
    result = await session.execute(
        update(GenerationBatch)
        .where(
            GenerationBatch.id == batch_id,
            GenerationBatch.status.in_(ACTIVE_BATCH_STATUSES),
            ~pending,
        )
        .values(status="completed", completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def complete_finished_batches(session: AsyncSession, now: datetime) -> int:
    """Mark completed every active batch with no item left queued or running (a batch whose
    last item was recorded by an instance that died before it could say so)."""
    pending = exists().where(
        GenerationBatchItem.batch_id == GenerationBatch.id,
        GenerationBatchItem.status.in_(("queued", "running")),
    )
    result = await session.execute(
        update(GenerationBatch)
        .where(GenerationBatch.status.in_(ACTIVE_BATCH_STATUSES), ~pending)
        .values(status="completed", completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def is_finished(session: AsyncSession, batch_id: uuid.UUID) -> bool:
    """No item of the batch is queued or running."""
    pending = exists().where(
        GenerationBatchItem.batch_id == batch_id,
        GenerationBatchItem.status.in_(("queued", "running")),
    )
    return not bool(await session.scalar(select(pending)))


async def cancel_queued_items(
    session: AsyncSession, batch_id: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """Mark the batch's queued items canceled; returns their holds."""
    rows = await session.execute(
        update(GenerationBatchItem)
        .where(GenerationBatchItem.batch_id == batch_id, GenerationBatchItem.status == "queued")
        .values(status="canceled", finished_at=now, claimed_until=None)
        .returning(GenerationBatchItem.hold_id)
        .execution_options(synchronize_session=False)
    )
    return list(rows.scalars())


async def renew_leases(
    session: AsyncSession, instance_id: str, claimed_until: datetime
) -> list[uuid.UUID]:
    """Extend the leases of this instance's running items (those not being recorded right
    now); returns their holds."""
    owned = (
        select(GenerationBatchItem.id, GenerationBatchItem.hold_id)
        .where(
            GenerationBatchItem.claimed_by == instance_id,
            GenerationBatchItem.status == "running",
        )
        .order_by(GenerationBatchItem.id)
        .with_for_update(skip_locked=True)
    )
    rows = (await session.execute(owned)).all()
    if rows:
        await session.execute(
            update(GenerationBatchItem)
            .where(GenerationBatchItem.id.in_([row.id for row in rows]))
            .values(claimed_until=claimed_until)
            .execution_options(synchronize_session=False)
        )
    return [row.hold_id for row in rows]


async def queued_item_holds(session: AsyncSession) -> list[uuid.UUID]:
    """Holds of every item still waiting for a worker, in any batch."""
    statement = select(GenerationBatchItem.hold_id).where(GenerationBatchItem.status == "queued")
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
    SET available = available - 1, reserved = reserved + 1, updated_at = $6::timestamptz
    WHERE account_id = $1 AND available >= 1 AND EXISTS (SELECT 1 FROM usable_site)
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
"""
RESERVE_GENERATION_SQL = RESERVE_GENERATION_SQL.replace(
    "ALERT_STATE_AFTER_RESERVE", alerts.next_state_sql("available - 1")
)
"""$1 account, $2 site, $3 generation id, $4 hold id, $5 kind, $6 now, $7 expires at,
$8 input (JSON text), $9 idempotency record id or NULL, $10 the balance channel.
One row when reserved; none when the site, the balance or anything else says no, and
none when this credit would move the balance alerts (`app.credits.alerts`): a crossing
is judged and its event recorded by the ORM path, in its transaction, under the same row
lock. (The charge moves `reserved` only, so it never crosses.)"""

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
