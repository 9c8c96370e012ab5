import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.accounts.dependencies import AdminAccess
from app.cursors import TIME_ID_CURSOR_PATTERN, decode_time_id, encode_time_id
from app.db import Session
from app.deps import AppSettings
from app.errors import NotFound, Unauthorized, problem_responses
from app.outbound import repository, service
from app.outbound.dispatcher import events_configured
from app.outbound.models import OutboundAttempt, OutboundEvent
from app.outbound.schemas import (
    DeliveryAttemptRead,
    DeliveryStatusName,
    EventDeliveryPage,
    EventDeliveryRead,
)
from app.outbound.service import DeliveryPending, EventsNotConfigured

router = APIRouter(tags=["admin"])


def delivery_read(event: OutboundEvent, attempts: list[OutboundAttempt]) -> EventDeliveryRead:
    return EventDeliveryRead(
        id=event.id,
        webhook_id=service.webhook_id(event),
        type=event.type,  # type: ignore[arg-type]
        account_id=event.account_id,
        status=event.status,  # type: ignore[arg-type]
        created_at=event.created_at,
        next_attempt_at=event.next_attempt_at if event.status == "pending" else None,
        delivered_at=event.delivered_at,
        failed_at=event.failed_at,
        payload=json.loads(event.body),
        attempts=[DeliveryAttemptRead.model_validate(a) for a in attempts],
    )


@router.get(
    "/v1/admin/event-deliveries",
    responses=problem_responses(Unauthorized),
)
async def list_event_deliveries(
    session: Session,
    _: AdminAccess,
    status: Annotated[DeliveryStatusName | None, Query(description="Only these.")] = None,
    account_id: Annotated[uuid.UUID | None, Query(description="One account's events.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Deliveries per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=TIME_ID_CURSOR_PATTERN, description="`next_cursor` of the last page."),
    ] = None,
) -> EventDeliveryPage:
    """Outbound event deliveries, newest first, with every attempt."""
    events = await repository.list_events(
        session,
        status=status,
        account_id=account_id,
        limit=limit + 1,
        before=decode_time_id(cursor) if cursor else None,
    )
    has_more = len(events) > limit
    events = events[:limit]
    attempts = await repository.attempts_of(session, [event.id for event in events])
    return EventDeliveryPage(
        deliveries=[delivery_read(event, attempts[event.id]) for event in events],
        next_cursor=encode_time_id(events[-1].created_at, events[-1].id) if has_more else None,
    )


@router.post(
    "/v1/admin/event-deliveries/{delivery_id}/redeliver",
    status_code=202,
    responses=problem_responses(Unauthorized, NotFound, DeliveryPending, EventsNotConfigured),
)
async def redeliver_event(
    delivery_id: uuid.UUID, session: Session, settings: AppSettings, _: AdminAccess
) -> EventDeliveryRead:
    """Send a delivered or failed event again, with the same `webhook-id` (and the retry
    schedule from the start). `409 delivery_pending` while it is still being delivered."""
    if not events_configured(settings):
        raise EventsNotConfigured(
            "Outbound events are not sent: set EVENTS_WEBHOOK_URL and EVENTS_WEBHOOK_SECRET."
        )
    event = await service.redeliver(session, delivery_id)
    attempts = await repository.attempts_of(session, [event.id])
    return delivery_read(event, attempts[event.id])
