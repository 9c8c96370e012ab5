"""Generation batches: created with every item's credit held at once, read, canceled and
followed live. The workers generate the items (`app.generation.worker`, economy:
`app.generation.economy`)."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.accounts import service as accounts
from app.config import Settings
from app.credits import service as credits
from app.db import utcnow
from app.errors import NotFound
from app.generation import economy_repository, lifecycle, queue, rate_bucket, repository
from app.generation.events import StreamEvent, follow_batch, parse_last_event_id
from app.generation.models import GenerationBatch
from app.generation.providers.base import GenerationKind
from app.generation.runtime import GenerationRuntime
from app.generation.schemas import BatchCreate, BatchDetail, BatchRead
from app.generation.views import batch_read, item_read


async def create_batch(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    body: BatchCreate,
    idempotency_key: str | None,
) -> BatchRead | idempotency.Replay:
    """`POST /v1/generation-batches` in the request's transaction: the key's stored answer
    replayed, or the batch reserved and its answer stored for the key."""
    request = idempotency.IdempotentRequest.of(
        idempotency.account_scope(account_id),
        idempotency_key,
        "POST",
        "/v1/generation-batches",
        body.model_dump(mode="json", exclude_none=True),
    )
    started = await idempotency.begin(session, request)
    if isinstance(started, idempotency.Replay):
        return started
    batch = await reserve_batch(
        session,
        settings,
        account_id,
        body.site_id,
        GenerationKind(body.kind),
        [item.model_dump(mode="json", exclude_none=True) for item in body.items],
        body.priority or "standard",
    )
    await idempotency.finish(session, started, 202, batch.model_dump(mode="json"))
    return batch


async def reserve_batch(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payloads: list[dict[str, Any]],
    priority: str = "standard",
) -> BatchRead:
    """Every item's credit reserved at once (one hold each), or `InsufficientCredits` and
    nothing at all. The workers take it from here (economy: `app.generation.economy`)."""
    account = await accounts.get_account(session, account_id)
    accounts.ensure_usable(account)
    await accounts.get_site(session, account_id, site_id)
    await rate_bucket.spend_rate_token(session, settings, account_id)
    batch_id = uuid.uuid4()
    holds = await credits.reserve_many(
        session,
        account_id,
        [1] * len(payloads),
        ttl=timedelta(seconds=settings.batch_hold_ttl_seconds),
        references=[f"batch:{batch_id}:{index}" for index in range(len(payloads))],
    )
    now = utcnow()
    batch = GenerationBatch(
        id=batch_id,
        account_id=account_id,
        site_id=site_id,
        kind=kind.value,
        status="queued",
        total=len(payloads),
        priority=priority,
        created_at=now,
    )
    items = [
        repository.NewItem(index, payload, hold.id)
        for index, (payload, hold) in enumerate(zip(payloads, holds, strict=True))
    ]
    await repository.add_batch(session, batch, items)
    await queue.notify(session, queue.BATCH_CREATED_CHANNEL, [str(batch_id)])
    return batch_read(batch, {})


async def _load_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> GenerationBatch:
    batch = await repository.get_batch(session, account_id, batch_id)
    if batch is None:
        raise NotFound("No such generation batch.")
    return batch


async def get_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> BatchDetail:
    batch = await _load_batch(session, account_id, batch_id)
    items = await repository.list_items(session, batch_id)
    counts: dict[str, int] = {}
    for item in items:
        status = lifecycle.published(item.status)
        counts[status] = counts.get(status, 0) + 1
    return BatchDetail(
        **batch_read(batch, counts).model_dump(), items=[item_read(i) for i in items]
    )


async def cancel_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> BatchRead:
    """Stop the batch: every item whose model call has not started (queued, or claimed by a
    worker of any instance) is canceled and its credit released, in this transaction; a
    worker moves an item to `generating` only while its batch is not canceled, so once this
    commits no call starts. Calls already in flight finish (and are charged if they
    succeed)."""
    await _load_batch(session, account_id, batch_id)
    batch = await repository.lock_batch(session, batch_id)
    if batch.status in repository.ACTIVE_BATCH_STATUSES:
        now = utcnow()
        batch.status = "canceled"
        batch.canceled_at = now
        hold_ids = await queue.cancel_unstarted_items(session, batch, now)
        if batch.priority == "economy":
            hold_ids += await economy_repository.cancel_submitted_items(session, batch_id, now)
            await queue.number_finished_items(session, batch)
        await credits.release_many(session, hold_ids, now=now)
        await session.flush()
        await queue.notify(session, queue.BATCH_CHANGED_CHANNEL, [str(batch_id)])
    return batch_read(batch, await repository.item_counts(session, batch_id))


async def ensure_batch(
    sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID, batch_id: uuid.UUID
) -> None:
    """`NotFound` unless the batch is the account's (in a short session of its own, so a
    stream holds no connection)."""
    async with sessionmaker() as session:
        await _load_batch(session, account_id, batch_id)


def batch_events(
    runtime: GenerationRuntime, batch_id: uuid.UUID, last_event_id: str | None
) -> AsyncIterator[StreamEvent]:
    """The batch's events (see `app.generation.events.follow_batch`), from this process's
    one feed of the batch, which follows workers on every instance."""
    return follow_batch(
        runtime.feeds,
        batch_id,
        parse_last_event_id(last_event_id),
        ping_seconds=runtime.settings.sse_ping_interval_seconds,
        snapshot=lambda batch, counts: batch_read(batch, counts).model_dump(mode="json"),
    )
