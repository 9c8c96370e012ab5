"""Releases holds whose time ran out, so a crashed generation never keeps credits."""

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import service

logger = logging.getLogger(__name__)


async def sweep_once(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 1000) -> int:
    """Expire every due hold, `limit` at a time; returns how many were released."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            expired = await service.expire_due(session, limit=limit)
        total += expired
        if expired < limit:
            return total


async def sweep_forever(sessionmaker: async_sessionmaker[AsyncSession], interval: float) -> None:
    while True:
        try:
            expired = await sweep_once(sessionmaker)
            if expired:
                logger.info("released expired holds", extra={"holds": expired})
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("hold sweep failed; retrying")
        await asyncio.sleep(interval)
