"""What the batch workers and the economy batches both run in the background: a step
repeated on an interval that survives its own failures, and keeping holds alive in chunks
(one short transaction per chunk, skipping rows another transaction holds)."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import service as credits

logger = logging.getLogger(__name__)

HOLD_CHUNK = 500
"""Holds kept alive in one transaction at most."""


async def every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `step` every `seconds`, for ever; a failure is logged and the next turn tries
    again (only a cancel stops it)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed; retrying", what)


async def keep_holds_alive(
    sessionmaker: async_sessionmaker[AsyncSession],
    holds: Sequence[uuid.UUID],
    ttl: timedelta,
) -> None:
    """Extend each open hold to at least `ttl` from now, `HOLD_CHUNK` per transaction."""
    for start in range(0, len(holds), HOLD_CHUNK):
        async with sessionmaker() as session, session.begin():
            chunk = list(holds[start : start + HOLD_CHUNK])
            await credits.keep_alive(session, chunk, ttl=ttl, skip_locked=True)
