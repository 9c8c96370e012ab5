"""SQL for generations, batches and the batch workers' queue. Callers own the transaction."""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer

from app.credits import alerts
from app.credits.repository import RATE_TOKENS
from app.generation import lifecycle
from app.generation.lifecycle import CANCELABLE, LEASED, UNFINISHED, ItemState, check_move
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


# --- the batch workers' queue ---

CLAIMABLE_SQL = (
    "((i.status = 'queued' AND (i.claimed_until IS NULL OR i.claimed_until <= :now))"
    f" OR (i.status IN ({lifecycle.sql_list(LEASED)}) AND i.claimed_until <= :now))"
)
"""An item a worker may take: queued (and past any provider's Retry-After), or leased by a
worker that stopped renewing its lease."""

ACTIVE_BATCHES_SQL = (
    f"b.status IN ({', '.join(repr(s) for s in ACTIVE_BATCH_STATUSES)})"
    # Economy batches go to the Message Batches API (`app.generation.economy`).
    " AND b.priority = 'standard'"
)
"""Batches the claim serves, on both databases (one more condition here keeps a kind of
batch out of the claim everywhere)."""

FAIR_CLAIM_SQL = f"""
WITH active AS (
    SELECT b.id, b.account_id, b.kind, b.created_at, b.last_claimed_at
    FROM generation_batch b
    WHERE {ACTIVE_BATCHES_SQL}
      AND EXISTS (SELECT 1 FROM generation_batch_item i WHERE i.batch_id = b.id
                  AND {CLAIMABLE_SQL})
), per_account AS (
    SELECT a.*,
           max(a.last_claimed_at) OVER account AS account_served_at,
           min(a.created_at) OVER account AS account_since,
           count(*) OVER account AS account_batches,
           row_number() OVER (PARTITION BY a.account_id
                              ORDER BY a.last_claimed_at NULLS FIRST, a.created_at, a.id)
               AS batch_turn
    FROM active a
    WINDOW account AS (PARTITION BY a.account_id)
), turns AS (
    SELECT p.*,
           dense_rank() OVER (ORDER BY p.account_served_at NULLS FIRST, p.account_since,
                                       p.account_id) AS account_turn
    FROM per_account p
), quotas AS (
    SELECT t.*,
           (CAST(:limit AS bigint) + max(t.account_turn) OVER () - 1)
               / max(t.account_turn) OVER () AS account_quota
    FROM turns t
), chosen AS (
    SELECT q.id, q.kind, q.account_turn, q.batch_turn,
           least(q.account_batches, q.account_quota) AS cycle,
           (q.account_quota + least(q.account_batches, q.account_quota) - 1)
               / least(q.account_batches, q.account_quota) AS batch_quota
    FROM quotas q
    WHERE q.account_turn <= :limit AND q.batch_turn <= q.account_quota
), locked AS (
    SELECT c.kind, c.account_turn, c.batch_turn, c.cycle, item.id, item.index
    FROM chosen c
    CROSS JOIN LATERAL (
        SELECT i.id, i.index FROM generation_batch_item i
        WHERE i.batch_id = c.id AND {CLAIMABLE_SQL}
        ORDER BY i.index
        LIMIT c.batch_quota
        FOR UPDATE OF i SKIP LOCKED
    ) item
), picked AS (
    SELECT l.id, l.kind,
           (row_number() OVER (PARTITION BY l.account_turn, l.batch_turn ORDER BY l.index) - 1)
               * l.cycle + l.batch_turn AS position,
           l.account_turn
    FROM locked l
    ORDER BY position, l.account_turn
    LIMIT :limit
)
UPDATE generation_batch_item AS i
SET status = 'claimed', claimed_by = :instance_id, claim_token = :claim_token,
    claimed_until = :claimed_until, attempts = i.attempts + 1
FROM picked
WHERE i.id = picked.id
RETURNING i.id, i.batch_id, i.hold_id, i.input, i.attempts, picked.kind,
          picked.position, picked.account_turn
"""
"""The fair claim, one statement on PostgreSQL: round-robin over accounts (the one served
longest ago first, an account never served ahead of all), then over each account's
batches the same way, then items in order. Each chosen batch contributes at most its share
of `limit`, so the statement locks about `limit` items whatever is queued; `SKIP LOCKED`
gives concurrent claimers (any instance) different items. The batches' `last_claimed_at`
moves in a transaction of its own afterwards (`mark_batches_claimed`): a cancel locks the
batch row before its items, so the claim must not wait for a batch row while it holds
items."""


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    batch_id: uuid.UUID
    hold_id: uuid.UUID
    input: dict[str, Any]
    attempts: int
    kind: str


@dataclass(frozen=True)
class FairBatch:
    """What the fair order needs to know of an active batch."""

    id: uuid.UUID
    account_id: uuid.UUID
    kind: str
    created_at: datetime
    last_claimed_at: datetime | None


@dataclass(frozen=True)
class FairPlan:
    batch: FairBatch
    account_turn: int
    batch_turn: int
    cycle: int
    quota: int


def fair_plan(batches: Sequence[FairBatch], limit: int) -> list[FairPlan]:
    """The same choice as `FAIR_CLAIM_SQL`'s `chosen` (used on SQLite, and the statement's
    specification): which batches to take items from, and how many at most."""
    if not batches:
        return []
    by_account: dict[uuid.UUID, list[FairBatch]] = defaultdict(list)
    for batch in batches:
        by_account[batch.account_id].append(batch)
    never = datetime.min.replace(tzinfo=UTC)

    def served_at(batch: FairBatch) -> tuple[int, datetime]:
        return (0, never) if batch.last_claimed_at is None else (1, batch.last_claimed_at)

    def account_key(account_id: uuid.UUID) -> tuple[Any, ...]:
        own = by_account[account_id]
        served = [b.last_claimed_at for b in own if b.last_claimed_at is not None]
        latest = (1, max(served)) if served else (0, never)
        return (latest, min(b.created_at for b in own), str(account_id))

    accounts = sorted(by_account, key=account_key)
    account_quota = -(-limit // len(accounts))
    plans = []
    for account_turn, account_id in enumerate(accounts[:limit], start=1):
        own = sorted(by_account[account_id], key=lambda b: (served_at(b), b.created_at, str(b.id)))
        cycle = min(len(own), account_quota)
        for batch_turn, batch in enumerate(own[:account_quota], start=1):
            plans.append(
                FairPlan(batch, account_turn, batch_turn, cycle, -(-account_quota // cycle))
            )
    return plans


def fair_pick(
    plans: Sequence[FairPlan], items: dict[uuid.UUID, list[int]], limit: int
) -> list[int]:
    """Item ids in the fair order (`FAIR_CLAIM_SQL`'s `picked`); `items` are each planned
    batch's claimable item ids in index order, at most its quota."""
    ranked = []
    for plan in plans:
        for round_, item_id in enumerate(items.get(plan.batch.id, [])[: plan.quota]):
            ranked.append((round_ * plan.cycle + plan.batch_turn, plan.account_turn, item_id))
    return [item_id for _, _, item_id in sorted(ranked)[:limit]]


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
    rows = await session.execute(
        update(GenerationBatchItem)
        .where(
            GenerationBatchItem.batch_id == batch.id,
            GenerationBatchItem.status.in_(lifecycle.values(CANCELABLE)),
        )
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
    economy results, and items finished before event numbers existed); how many."""
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
    rows = await session.execute(
        update(GenerationBatchItem)
        .where(
            GenerationBatchItem.batch_id == batch.id,
            GenerationBatchItem.status.in_(lifecycle.values(LEASED)),
            GenerationBatchItem.claimed_until <= now,
        )
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
