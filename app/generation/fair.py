"""The fair order of the batch queue, in one place: the claim statement for PostgreSQL
(`FAIR_CLAIM_SQL`; with the claimed holds kept alive, `CLAIM_SQL`, the batch workers' one
statement) and its specification in Python (`fair_plan`, `fair_pick`, which SQLite uses):
round-robin over accounts first, then over an account's batches."""

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.credits import statements
from app.db import StatementRunner
from app.generation import lifecycle
from app.generation.lifecycle import LEASED
from app.generation.repository import ACTIVE_BATCH_STATUSES

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

FAIR_PICK_SQL = f"""
active AS (
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
"""
"""The fair order's CTEs (`active AS (...), ..., picked AS (...)`): `picked` holds the
items to claim, locked (`id`, `kind`, `position`, `account_turn`)."""

CLAIM_PICKED_SQL = """
UPDATE generation_batch_item AS i
SET status = 'claimed', claimed_by = :instance_id, claim_token = :claim_token,
    claimed_until = :claimed_until, attempts = i.attempts + 1
FROM picked
WHERE i.id = picked.id
RETURNING i.id, i.batch_id, i.hold_id, i.input, i.attempts, picked.kind,
          picked.position, picked.account_turn
"""
"""The picked items claimed, and returned."""

FAIR_CLAIM_SQL = f"WITH {FAIR_PICK_SQL}{CLAIM_PICKED_SQL}"
"""The fair claim, one statement on PostgreSQL: round-robin over accounts (the one served
longest ago first, an account never served ahead of all), then over each account's
batches the same way, then items in order. Each chosen batch contributes at most its share
of `limit`, so the statement locks about `limit` items whatever is queued; `SKIP LOCKED`
gives concurrent claimers (any instance) different items. The batches' `last_claimed_at`
moves in a transaction of its own afterwards (`mark_batches_claimed`): a cancel locks the
batch row before its items, so the claim must not wait for a batch row while it holds
items."""


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


@dataclass(frozen=True)
class ClaimedRow:
    """An item just claimed: what its worker needs to generate it."""

    id: int
    batch_id: uuid.UUID
    hold_id: uuid.UUID
    input: dict[str, Any]
    attempts: int
    kind: str


def _numbered(sql: str, names: Sequence[str]) -> str:
    """`sql` with its `:name` parameters as asyncpg's `$n`, numbered in `names`' order."""
    return re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m.group(1)) + 1}", sql)


CLAIM_SQL = _numbered(
    f"""WITH {FAIR_PICK_SQL}, claimed AS ({CLAIM_PICKED_SQL}), {
        statements.keep_alive_sql(
            name="alive",
            hold_ids="SELECT hold_id FROM claimed WHERE attempts <= :max_attempts",
            now=":now",
            expires_at=":hold_expires_at",
        )
    }
SELECT c.id, c.batch_id, c.hold_id, c.input, c.attempts, c.kind, c.position, c.account_turn,
       c.hold_id IN (SELECT id FROM alive) AS alive
FROM claimed c""",
    ("now", "limit", "instance_id", "claim_token", "claimed_until", "max_attempts",
     "hold_expires_at"),
)  # fmt: skip
"""The batch workers' claim on PostgreSQL as one statement on the driver pool: the fair
claim (`FAIR_CLAIM_SQL`) and `credits.keep_alive` of the claimed items' holds (those with
an attempt left), committed when it returns; each row says whether its hold is alive."""


async def claim_and_keep_alive(
    runner: StatementRunner,
    now: datetime,
    limit: int,
    *,
    instance_id: str,
    claim_token: uuid.UUID,
    claimed_until: datetime,
    max_attempts: int,
    hold_expires_at: datetime,
) -> tuple[list[ClaimedRow], set[uuid.UUID]]:
    """`claim_fairly` and `credits.keep_alive` of the holds of the claimed items that have
    an attempt left, in one statement (PostgreSQL): the rows in the fair order, and the
    holds kept alive."""
    rows = await runner.fetch(
        CLAIM_SQL,
        now,
        limit,
        instance_id,
        claim_token,
        claimed_until,
        max_attempts,
        hold_expires_at,
    )
    rows.sort(key=lambda row: (row["position"], row["account_turn"]))
    claimed = [
        ClaimedRow(
            row["id"],
            row["batch_id"],
            row["hold_id"],
            json.loads(row["input"]),
            row["attempts"],
            row["kind"],
        )
        for row in rows
    ]
    return claimed, {row["hold_id"] for row in rows if row["alive"]}
