"""Without EVENTS_WEBHOOK_URL events are recorded, never sent, and pruned after the
retention window; redelivery says it is not configured."""

import asyncio
import uuid

from sqlalchemy import func, select

from app.config import Settings
from app.housekeeping import prune_once
from app.outbound.models import OutboundAttempt, OutboundEvent
from tests.conftest import ADMIN, adjust, funded_account


async def count(sessionmaker, account_id) -> int:
    async with sessionmaker() as session:
        return int(
            await session.scalar(select(func.count()).where(OutboundEvent.account_id == account_id))
        )


async def test_events_are_kept_unsent_then_pruned(client, sessionmaker, settings: Settings):
    account = await funded_account(client, 60)
    assert (await adjust(client, account, -60)).status_code == 201  # low + depleted
    listed = await client.get(
        "/v1/admin/event-deliveries", params={"account_id": str(account.id)}, headers=ADMIN
    )
    deliveries = listed.json()["deliveries"]
    assert [(d["type"], d["status"], d["attempts"]) for d in deliveries] == [
        ("balance.depleted", "pending", []),
        ("balance.low", "pending", []),
    ]
    redeliver = await client.post(
        f"/v1/admin/event-deliveries/{uuid.uuid4()}/redeliver", headers=ADMIN
    )
    assert redeliver.status_code == 503 and redeliver.json()["code"] == "service_not_configured"

    keep = settings.model_copy(update={"events_retention_days": 1.0})
    await prune_once(keep, sessionmaker)
    assert await count(sessionmaker, account.id) == 2  # young events stay
    await asyncio.sleep(0.2)
    short = settings.model_copy(update={"events_retention_days": 0.1 / 86400})
    await prune_once(short, sessionmaker)
    assert await count(sessionmaker, account.id) == 0
    async with sessionmaker() as session:
        orphans = await session.scalar(
            select(func.count())
            .select_from(OutboundAttempt)
            .outerjoin(OutboundEvent, OutboundEvent.id == OutboundAttempt.event_id)
            .where(OutboundEvent.id.is_(None))
        )
    assert orphans == 0
