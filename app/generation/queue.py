"""The batch workers' queue: the fair claim, leases, the claimed -> generating step, hand
backs and cancels of unstarted items, and the numbering of a batch's events. Callers own
the transaction (or, for the driver-pool statements, the connection)."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer

from app.generation import lifecycle
from app.generation.fair import (
    ACTIVE_BATCHES_SQL,
    FAIR_CLAIM_SQL,
    ClaimedRow,
    FairBatch,
    fair_pick,
    fair_plan,
)
from app.generation.lifecycle import CANCELABLE, LEASED, UNFINISHED, ItemState, check_move
from app.generation.models import GenerationBatch, GenerationBatchItem
from app.generation.repository import ACTIVE_BATCH_STATUSES

BATCH_CREATED_CHANNEL = "generation_batch_created"
"""`NOTIFY` when a batch is created: every instance's claimer looks now, not at its poll."""
BATCH_CHANGED_CHANNEL = "generation_batch_changed"
"""`NOTIFY` (the batch id) when items of a batch finish or it is canceled: every instance's
feed of that batch reads now, not at its poll."""


async def notify(session: AsyncSession, channel: str, payloads: Sequence[str]) -> None:
    """Tell every instance, at this transaction's commit (PostgreSQL; SQLite runs one
    process, which wakes itself)."""
    if not payloads or session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(
        text("SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) payload"),
        {"channel": channel, "payloads": list(payloads)},
    )


def _claimable(now: datetime) -> Any:
    return or_(
        and_(
            GenerationBatchItem.status == ItemState.QUEUED,
            or_(
                GenerationBatchItem.claimed_until.is_(None),
                GenerationBatchItem.claimed_until <= now,
            ),
        ),
        and_(
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
            GenerationBatchItem.claimed_until <= now,
        ),
    )


async def claim_fairly(
    session: AsyncSession,
    now: datetime,
    limit: int,
    *,
    instance_id: str,
    claim_token: uuid.UUID,
    claimed_until: datetime,
) -> list[ClaimedRow]:
    """Claim up to `limit` items in the fair order (queued or left by a dead worker ->
    `claimed`, one more attempt). PostgreSQL: one statement; SQLite (one process, its
    transaction already serialized): the same order computed here."""
    params = {
        "now": now,
        "limit": limit,
        "instance_id": instance_id,
        "claim_token": claim_token,
        "claimed_until": claimed_until,
    }
    if session.get_bind().dialect.name == "postgresql":
        rows = list((await session.execute(text(FAIR_CLAIM_SQL), params)).all())
        rows.sort(key=lambda row: (row.position, row.account_turn))
        return [
            ClaimedRow(row.id, row.batch_id, row.hold_id, row.input, row.attempts, row.kind)
            for row in rows
        ]
    b = aliased(GenerationBatch, name="b")
    candidates = (
        await session.execute(
            select(b.id, b.account_id, b.kind, b.created_at, b.last_claimed_at).where(
                text(ACTIVE_BATCHES_SQL),  # the same batches as the statement's
                exists().where(GenerationBatchItem.batch_id == b.id, _claimable(now)),
            )
        )
    ).all()
    plans = fair_plan([FairBatch(*row) for row in candidates], limit)
    items: dict[uuid.UUID, list[int]] = {}
    for plan in plans:
        items[plan.batch.id] = list(
            (
                await session.execute(
                    select(GenerationBatchItem.id)
                    .where(GenerationBatchItem.batch_id == plan.batch.id, _claimable(now))
                    .order_by(GenerationBatchItem.index)
                    .limit(plan.quota)
                )
            ).scalars()
        )
    picked = fair_pick(plans, items, limit)
    if not picked:
        return []
    await session.execute(
        update(GenerationBatchItem)
        .where(GenerationBatchItem.id.in_(picked))
        .values(
            status=ItemState.CLAIMED,
            claimed_by=instance_id,
            claim_token=claim_token,
            claimed_until=claimed_until,
            attempts=GenerationBatchItem.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    kinds = {plan.batch.id: plan.batch.kind for plan in plans}
    updated = (
        await session.execute(
            select(
                GenerationBatchItem.id,
                GenerationBatchItem.batch_id,
                GenerationBatchItem.hold_id,
                GenerationBatchItem.input,
                GenerationBatchItem.attempts,
            ).where(GenerationBatchItem.id.in_(picked))
        )
    ).all()
    found = {row.id: row for row in updated}
    return [
        ClaimedRow(r.id, r.batch_id, r.hold_id, r.input, r.attempts, kinds[r.batch_id])
        for r in (found[item_id] for item_id in picked)
    ]


async def mark_batches_claimed(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID], now: datetime
) -> None:
    """The fair claim's memory (served now), and `queued` batches become `running`."""
    await session.execute(
        update(GenerationBatch)
        .where(GenerationBatch.id.in_(batch_ids))
        .values(
            last_claimed_at=now,
            status=case(
                (GenerationBatch.status == "queued", "running"), else_=GenerationBatch.status
            ),
        )
        .execution_options(synchronize_session=False)
    )


MARK_BATCHES_CLAIMED_SQL = """
UPDATE generation_batch
SET last_claimed_at = $2::timestamptz,
    status = CASE WHEN status = 'queued' THEN 'running' ELSE status END
WHERE id = ANY($1::uuid[])
"""
"""`mark_batches_claimed` as one statement on the driver pool."""


async def start_generating(
    session: AsyncSession,
    claims: Sequence[tuple[int, uuid.UUID]],
    claimed_until: datetime,
) -> set[int]:
    """`claimed -> generating` for the given `(item, claim token)` pairs whose claim is still
    the worker's and whose batch is not canceled; the ids moved. Committed by the caller
    right before the model calls: a cancel that committed first leaves nothing to move."""
    if not claims:
        return set()
    check_move(ItemState.CLAIMED, ItemState.GENERATING)
    rows = await session.execute(
        update(GenerationBatchItem)
        .where(
            tuple_(GenerationBatchItem.id, GenerationBatchItem.claim_token).in_(list(claims)),
            GenerationBatchItem.status == ItemState.CLAIMED,
            exists().where(
                GenerationBatch.id == GenerationBatchItem.batch_id,
                GenerationBatch.status.in_(ACTIVE_BATCH_STATUSES),
            ),
        )
        .values(status=ItemState.GENERATING, claimed_until=claimed_until)
        .returning(GenerationBatchItem.id)
        .execution_options(synchronize_session=False)
    )
    return set(rows.scalars())


START_GENERATING_SQL = f"""
WITH moved AS (
    UPDATE generation_batch_item AS i
    SET status = 'generating', claimed_until = $3::timestamptz
    FROM unnest($1::bigint[], $2::uuid[]) AS claim(id, token)
    WHERE i.id = claim.id AND i.claim_token = claim.token AND i.status = 'claimed'
      AND EXISTS (SELECT 1 FROM generation_batch b
                  WHERE b.id = i.batch_id AND {ACTIVE_BATCHES_SQL})
    RETURNING i.id
)
SELECT coalesce(array_agg(id), '{{}}') AS ids FROM moved
"""
"""`start_generating` as one statement (atomic, committed when it returns) on the driver
pool: the worker's last step before the model call is one round trip. $1 item ids, $2
their claim tokens, $3 the new lease."""


def warm_up_statements(now: datetime) -> list[tuple[str, tuple[Any, ...]]]:
    """The workers' statements run for every item or claim, with arguments that match no
    row (`StatementRunner.warm_up`): no ids."""
    return [(START_GENERATING_SQL, ([], [], now)), (MARK_BATCHES_CLAIMED_SQL, ([], now))]


async def lock_batches(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, GenerationBatch]:
    """Lock batch rows in id order. Whoever finishes items locks their batches first, then
    the items (as a cancel does): the batch row orders the events' numbers."""
    statement = (
        select(GenerationBatch)
        .where(GenerationBatch.id.in_(sorted(set(batch_ids))))
        .order_by(GenerationBatch.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {batch.id: batch for batch in (await session.execute(statement)).scalars()}


async def lock_items(
    session: AsyncSession, item_ids: Sequence[int], *, with_input: bool = True
) -> dict[int, GenerationBatchItem]:
    """Lock the items, in id order (as every multi-item locker here does); without their
    (possibly large) input if the caller does not need it."""
    options = [] if with_input else [defer(GenerationBatchItem.input)]
    statement = (
        select(GenerationBatchItem)
        .options(*options)
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


async def hand_back_all(session: AsyncSession, instance_id: str) -> int:
    """At shutdown: every item this instance still holds (claimed, or generating with its
    call interrupted) in a batch not canceled goes back to the queue, its claim not
    counted; how many. (Items of canceled batches are left to the stale-lease cleanup.)"""
    result = await session.execute(
        update(GenerationBatchItem)
        .where(
            GenerationBatchItem.claimed_by == instance_id,
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
            # Not an economy item at Anthropic: its result comes from the message batch.
            GenerationBatchItem.provider_batch_id.is_(None),
            exists().where(
                GenerationBatch.id == GenerationBatchItem.batch_id,
                GenerationBatch.status.in_(ACTIVE_BATCH_STATUSES),
            ),
        )
        .values(
            status=ItemState.QUEUED,
            claimed_by=None,
            claim_token=None,
            claimed_until=None,
            attempts=GenerationBatchItem.attempts - 1,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def next_event_seq(batch: GenerationBatch) -> int:
    """Take the batch's next event number (the batch row must be locked)."""
    batch.event_seq = (batch.event_seq or 0) + 1
    return batch.event_seq


def finish_item(
    item: GenerationBatchItem, batch: GenerationBatch, state: ItemState, now: datetime
) -> None:
    """An item's final move, checked against the life cycle, with its batch's next event
    number (the batch row must be locked): batch workers and economy batches alike."""
    item.status = check_move(item.status, state)
    item.finished_at = now
    item.claimed_until = None
    item.claim_token = None
    item.event_seq = next_event_seq(batch)


def fail_item(
    item: GenerationBatchItem, batch: GenerationBatch, reason: str, detail: str, now: datetime
) -> None:
    finish_item(item, batch, ItemState.FAILED, now)
    item.error_code = "generation_failed"
    item.error_detail = f"{reason}: {detail}"


async def unclaim(
    session: AsyncSession, item_id: int, claim_token: uuid.UUID, *, spend_attempt: bool
) -> bool:
    """Hand an item back to the queue (`claimed`/`generating` -> `queued`) if the claim is
    still ours; without `spend_attempt` its claim does not count."""
    values: dict[str, Any] = {"status": ItemState.QUEUED, "claimed_by": None, "claim_token": None}
    values["claimed_until"] = None
    if not spend_attempt:
        values["attempts"] = GenerationBatchItem.attempts - 1
    result = await session.execute(
        update(GenerationBatchItem)
        .where(
            GenerationBatchItem.id == item_id,
            GenerationBatchItem.claim_token == claim_token,
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


_OPEN = lifecycle.values(UNFINISHED)


async def complete_batch_if_done(session: AsyncSession, batch_id: uuid.UUID, now: datetime) -> bool:
    """Mark the batch completed once no item is unfinished. Run after the item's own
    commit: of two workers finishing the last two items, the later one sees both."""
    pending = exists().where(
        GenerationBatchItem.batch_id == batch_id, GenerationBatchItem.status.in_(_OPEN)
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
    """Mark completed every active batch with no unfinished item (a batch whose last item
    was recorded by an instance that died before it could say so)."""
    pending = exists().where(
        GenerationBatchItem.batch_id == GenerationBatch.id,
        GenerationBatchItem.status.in_(_OPEN),
    )
    result = await session.execute(
        update(GenerationBatch)
        .where(GenerationBatch.status.in_(ACTIVE_BATCH_STATUSES), ~pending)
        .values(status="completed", completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def is_finished(session: AsyncSession, batch_id: uuid.UUID) -> bool:
    """No item of the batch is unfinished."""
    pending = exists().where(
        GenerationBatchItem.batch_id == batch_id, GenerationBatchItem.status.in_(_OPEN)
    )
    return not bool(await session.scalar(select(pending)))


async def cancel_unstarted_items(
    session: AsyncSession, batch: GenerationBatch, now: datetime
) -> list[uuid.UUID]:
    """Cancel the (locked) batch's items not sent to the model: queued and claimed ones,
    under one event number; returns their holds. An item a worker is moving to
    `generating` right now is waited for: it is then generating, and left to finish."""
    return await _cancel_items(
        session, batch, now, GenerationBatchItem.status.in_(lifecycle.values(CANCELABLE))
    )


async def _cancel_items(
    session: AsyncSession, batch: GenerationBatch, now: datetime, *where: Any
) -> list[uuid.UUID]:
    """The (locked) batch's items that match `where` -> `canceled`, under one event number
    (the batch's next); their holds, for the caller to release."""
    rows = await session.execute(
        update(GenerationBatchItem)
        .where(GenerationBatchItem.batch_id == batch.id, *where)
        .values(
            status=ItemState.CANCELED,
            finished_at=now,
            claimed_until=None,
            claim_token=None,
            event_seq=(batch.event_seq or 0) + 1,
        )
        .returning(GenerationBatchItem.hold_id)
        .execution_options(synchronize_session=False)
    )
    holds = list(rows.scalars())
    if holds:
        next_event_seq(batch)
    return holds


_FINISHED = lifecycle.values(lifecycle.FINISHED)


async def number_finished_items(session: AsyncSession, batch: GenerationBatch) -> int:
    """Give each of the (locked) batch's finished items that has no event number yet its
    own, in the order they finished (items finished by code that does not number them:
    items finished before event numbers existed); how many."""
    unnumbered = (
        await session.execute(
            select(GenerationBatchItem.id)
            .where(
                GenerationBatchItem.batch_id == batch.id,
                GenerationBatchItem.event_seq.is_(None),
                GenerationBatchItem.status.in_(_FINISHED),
            )
            .order_by(GenerationBatchItem.finished_at, GenerationBatchItem.index)
        )
    ).scalars()
    count = 0
    for item_id in list(unnumbered):
        await session.execute(
            update(GenerationBatchItem)
            .where(GenerationBatchItem.id == item_id)
            .values(event_seq=next_event_seq(batch))
            .execution_options(synchronize_session=False)
        )
        count += 1
    return count


async def batches_with_unnumbered_items(session: AsyncSession) -> list[uuid.UUID]:
    statement = (
        select(GenerationBatchItem.batch_id)
        .where(
            GenerationBatchItem.event_seq.is_(None),
            GenerationBatchItem.status.in_(_FINISHED),
        )
        .distinct()
    )
    return list((await session.execute(statement)).scalars())


async def canceled_batches_with_stale_items(
    session: AsyncSession, now: datetime
) -> list[uuid.UUID]:
    """Canceled batches with an item still leased by a worker that stopped renewing it (it
    died mid-call after the cancel)."""
    statement = (
        select(GenerationBatchItem.batch_id)
        .join(GenerationBatch, GenerationBatch.id == GenerationBatchItem.batch_id)
        .where(
            GenerationBatch.status == "canceled",
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
            GenerationBatchItem.claimed_until <= now,
        )
        .distinct()
    )
    return list((await session.execute(statement)).scalars())


async def cancel_stale_items(
    session: AsyncSession, batch: GenerationBatch, now: datetime
) -> list[uuid.UUID]:
    """Of a locked canceled batch: its leased items nobody renewed -> `canceled`, one event
    number; their holds."""
    return await _cancel_items(
        session,
        batch,
        now,
        GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
        GenerationBatchItem.claimed_until <= now,
    )


async def renew_leases(
    session: AsyncSession, instance_id: str, claimed_until: datetime
) -> list[uuid.UUID]:
    """Extend the leases of this instance's claimed and generating items (those not being
    recorded right now); returns their holds."""
    owned = (
        select(GenerationBatchItem.id, GenerationBatchItem.hold_id)
        .where(
            GenerationBatchItem.claimed_by == instance_id,
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
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
    statement = select(GenerationBatchItem.hold_id).where(
        GenerationBatchItem.status == ItemState.QUEUED
    )
    return list((await session.execute(statement)).scalars())


# --- a batch's events ---


async def batch_event_head(session: AsyncSession, batch_id: uuid.UUID) -> GenerationBatch | None:
    return await session.get(GenerationBatch, batch_id, populate_existing=True)


async def items_after(
    session: AsyncSession, batch_id: uuid.UUID, after_seq: int
) -> list[GenerationBatchItem]:
    """The batch's items that finished with an event number above `after_seq`, in order."""
    statement = (
        select(GenerationBatchItem)
        .options(defer(GenerationBatchItem.input))
        .where(
            GenerationBatchItem.batch_id == batch_id,
            GenerationBatchItem.event_seq.is_not(None),
            GenerationBatchItem.event_seq > after_seq,
        )
        .order_by(GenerationBatchItem.event_seq, GenerationBatchItem.index)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())
