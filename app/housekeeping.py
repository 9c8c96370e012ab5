"""Keeps tables that only grow bounded: every instance, every 10 minutes.

- the outbox: events recorded more than `EVENTS_RETENTION_DAYS` ago are deleted, sent,
  failed or never sent (without `EVENTS_WEBHOOK_URL` nothing is sent, so this is all that
  happens to them: the outbox holds at most that many days of events);
- plugin sessions expired for more than a day."""

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts import plugin_sessions
from app.config import Settings
from app.outbound import service as outbound

logger = logging.getLogger(__name__)

EVERY_SECONDS = 600.0
BATCH = 1000


async def prune_once(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    retention = timedelta(days=settings.events_retention_days)
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            pruned = await outbound.prune(session, retention=retention, limit=BATCH)
        total += pruned
        if pruned < BATCH:
            break
    async with sessionmaker() as session, session.begin():
        total += await plugin_sessions.prune(session, older_than=timedelta(days=1))
    return total


async def prune_forever(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        try:
            await prune_once(settings, sessionmaker)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("pruning failed; retrying later")
        await asyncio.sleep(EVERY_SECONDS)
