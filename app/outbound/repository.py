"""SQL for the outbox. Callers own the transaction."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.outbound.models import OutboundAttempt, OutboundEvent


async def add_event(session: AsyncSession, event: OutboundEvent) -> None:
    session.add(event)
    await session.flush()


async def claim_due(
    session: AsyncSession, now: datetime, limit: int, claimed_until: datetime
) -> list[OutboundEvent]:
    """Take up to `limit` due events for this dispatcher: locked with `SKIP LOCKED` (other
    instances take others), then pushed out of everyone's reach until `claimed_until`."""
    statement = (
        select(OutboundEvent)
        .where(OutboundEvent.status == "pending", OutboundEvent.next_attempt_at <= now)
        .order_by(OutboundEvent.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    events = list((await session.execute(statement)).scalars())
    for event in events:
        event.next_attempt_at = claimed_until
    await session.flush()
    return events


async def lock_claimed(
    session: AsyncSession, event_id: uuid.UUID, claimed_until: datetime
) -> OutboundEvent | None:
    """The event if it is still pending under this claim (locked), else None."""
    statement = (
        select(OutboundEvent)
        .where(
            OutboundEvent.id == event_id,
            OutboundEvent.status == "pending",
            OutboundEvent.next_attempt_at == claimed_until,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def lock_event(session: AsyncSession, event_id: uuid.UUID) -> OutboundEvent | None:
    statement = (
        select(OutboundEvent)
        .where(OutboundEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add_attempt(session: AsyncSession, attempt: OutboundAttempt) -> None:
    session.add(attempt)
    await session.flush()


async def list_events(
    session: AsyncSession,
    *,
    status: str | None,
    account_id: uuid.UUID | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[OutboundEvent]:
    """Newest first."""
    statement = select(OutboundEvent)
    if status is not None:
        statement = statement.where(OutboundEvent.status == status)
    if account_id is not None:
        statement = statement.where(OutboundEvent.account_id == account_id)
    if before is not None:
        created_at, event_id = before
        statement = statement.where(
            or_(
                OutboundEvent.created_at < created_at,
                and_(OutboundEvent.created_at == created_at, OutboundEvent.id < event_id),
            )
        )
    statement = statement.order_by(OutboundEvent.created_at.desc(), OutboundEvent.id.desc()).limit(
        limit
    )
    return list((await session.execute(statement)).scalars())


async def attempts_of(
    session: AsyncSession, event_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[OutboundAttempt]]:
    if not event_ids:
        return {}
    statement = (
        select(OutboundAttempt)
        .where(OutboundAttempt.event_id.in_(event_ids))
        .order_by(OutboundAttempt.id)
    )
    found: dict[uuid.UUID, list[OutboundAttempt]] = {event_id: [] for event_id in event_ids}
    for attempt in (await session.execute(statement)).scalars():
        found[attempt.event_id].append(attempt)
    return found


async def prune(session: AsyncSession, created_before: datetime, limit: int) -> int:
    """Delete up to `limit` events recorded before `created_before`, with their attempts."""
    old = list(
        (
            await session.execute(
                select(OutboundEvent.id)
                .where(OutboundEvent.created_at < created_before)
                .order_by(OutboundEvent.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
    )
    if not old:
        return 0
    await session.execute(delete(OutboundAttempt).where(OutboundAttempt.event_id.in_(old)))
    await session.execute(delete(OutboundEvent).where(OutboundEvent.id.in_(old)))
    return len(old)


async def pending_summary(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many events wait to be sent, and when the oldest of them was recorded."""
    row = (
        await session.execute(
            select(func.count(), func.min(OutboundEvent.created_at)).where(
                OutboundEvent.status == "pending"
            )
        )
    ).one()
    return int(row[0]), row[1]
