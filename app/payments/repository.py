"""SQL for purchase intents and the webhook inbox. Callers own the transaction."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import dialect_insert, utcnow
from app.payments.models import PurchaseIntent, WebhookEvent


async def get_intent(session: AsyncSession, intent_id: uuid.UUID) -> PurchaseIntent | None:
    return await session.get(PurchaseIntent, intent_id, populate_existing=True)


async def lock_intent(session: AsyncSession, intent_id: uuid.UUID) -> PurchaseIntent | None:
    statement = (
        select(PurchaseIntent)
        .where(PurchaseIntent.id == intent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def find_intent_by_checkout(
    session: AsyncSession, polar_checkout_id: str
) -> PurchaseIntent | None:
    statement = (
        select(PurchaseIntent)
        .where(PurchaseIntent.polar_checkout_id == polar_checkout_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def find_intent_by_order(session: AsyncSession, polar_order_id: str) -> PurchaseIntent | None:
    statement = (
        select(PurchaseIntent)
        .where(PurchaseIntent.polar_order_id == polar_order_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def live_first_time_intent(
    session: AsyncSession, account_id: uuid.UUID
) -> PurchaseIntent | None:
    """The account's first-time intent that is pending or open, if any (at most one)."""
    statement = (
        select(PurchaseIntent)
        .where(
            PurchaseIntent.account_id == account_id,
            PurchaseIntent.package_id == "first_time",
            PurchaseIntent.status.in_(("pending", "open")),
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add_intent(session: AsyncSession, intent: PurchaseIntent) -> PurchaseIntent:
    session.add(intent)
    await session.flush()
    return intent


async def delete_intent(session: AsyncSession, intent: PurchaseIntent) -> None:
    await session.delete(intent)
    await session.flush()


async def intents_needing_review(
    session: AsyncSession, account_id: uuid.UUID
) -> list[PurchaseIntent]:
    statement = (
        select(PurchaseIntent)
        .where(PurchaseIntent.account_id == account_id, PurchaseIntent.needs_review.is_(True))
        .order_by(PurchaseIntent.completed_at, PurchaseIntent.id)
    )
    return list((await session.execute(statement)).scalars())


async def insert_webhook_event(
    session: AsyncSession,
    *,
    webhook_id: str,
    event_type: str,
    payload: Any,
    webhook_timestamp: datetime,
) -> int | None:
    """Store a delivery in the inbox; None when this `webhook-id` is already there."""
    insert = dialect_insert(session)
    statement = (
        insert(WebhookEvent)
        .values(
            webhook_id=webhook_id,
            event_type=event_type,
            payload=payload,
            webhook_timestamp=webhook_timestamp,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["webhook_id"])
        .returning(WebhookEvent.id)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def get_webhook_event(session: AsyncSession, event_id: int) -> WebhookEvent | None:
    return await session.get(WebhookEvent, event_id)
