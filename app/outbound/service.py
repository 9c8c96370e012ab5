"""The outbox's rules: recording an event with the change that causes it, what an attempt's
outcome does to a delivery, redelivery, and pruning.

A delivery's statuses and the moves between them:

    pending  --2xx-->                delivered
    pending  --failure, retries left--> pending (next attempt after the schedule's wait)
    pending  --failure, none left-->    failed
    delivered | failed --redeliver-->   pending (the same event id, so the same webhook-id)
"""

import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound, ServiceNotConfigured
from app.outbound import repository
from app.outbound.models import OutboundAttempt, OutboundEvent

EVENT_TYPES = (
    "balance.low",
    "balance.depleted",
    "balance.recovered",
    "purchase.completed",
    "purchase.refunded",
)
RECORDED_KEY = "rankframe.outbound_recorded"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryPending(Conflict):
    code = "delivery_pending"
    title = "The event is still being delivered"


class EventsNotConfigured(ServiceNotConfigured):
    pass


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def webhook_id(event: OutboundEvent) -> str:
    """The `webhook-id` of every attempt at `event`."""
    return f"evt_{event.id.hex}"


async def record(
    session: AsyncSession,
    account_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    *,
    now: datetime | None = None,
) -> OutboundEvent:
    """Write the event into the outbox, in the caller's transaction: it exists if and only
    if the change that caused it commits. Due at once."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown outbound event type {event_type}")
    now = now or utcnow()
    body = {"type": event_type, "timestamp": iso(now), "data": data}
    event = OutboundEvent(
        id=uuid.uuid4(),
        account_id=account_id,
        type=event_type,
        body=json.dumps(body, separators=(",", ":")),
        status=DeliveryStatus.PENDING.value,
        attempt_count=0,
        next_attempt_at=now,
        created_at=now,
    )
    await repository.add_event(session, event)
    session.info[RECORDED_KEY] = session.info.get(RECORDED_KEY, 0) + 1
    return event


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRIED = "retried"
    FAILED = "failed"


async def record_attempt(
    session: AsyncSession,
    event: OutboundEvent,
    result: AttemptResult,
    *,
    schedule: Sequence[float],
    now: datetime,
) -> Outcome:
    """Write the attempt and move the (locked, pending) event on."""
    await repository.add_attempt(
        session,
        OutboundAttempt(
            event_id=event.id,
            attempted_at=now,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        ),
    )
    if result.delivered:
        event.status = DeliveryStatus.DELIVERED.value
        event.delivered_at = now
        event.next_attempt_at = None
        outcome = Outcome.SENT
    else:
        event.attempt_count += 1
        if event.attempt_count > len(schedule):
            event.status = DeliveryStatus.FAILED.value
            event.failed_at = now
            event.next_attempt_at = None
            outcome = Outcome.FAILED
        else:
            event.next_attempt_at = now + timedelta(seconds=schedule[event.attempt_count - 1])
            outcome = Outcome.RETRIED
    await session.flush()
    return outcome


async def redeliver(session: AsyncSession, event_id: uuid.UUID) -> OutboundEvent:
    """Send a delivered or failed event again, from the start of the schedule."""
    event = await repository.lock_event(session, event_id)
    if event is None:
        raise NotFound("No such event delivery.")
    if event.status == DeliveryStatus.PENDING:
        raise DeliveryPending("This event is still being delivered; it is not sent twice.")
    now = utcnow()
    event.status = DeliveryStatus.PENDING.value
    event.attempt_count = 0
    event.next_attempt_at = now
    event.failed_at = None
    await session.flush()
    return event


async def prune(session: AsyncSession, *, retention: timedelta, limit: int = 1000) -> int:
    return await repository.prune(session, utcnow() - retention, limit)
