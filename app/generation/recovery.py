"""Generations that will not finish on their own: those whose process died mid-call (swept
at hold expiry) and those whose recording the database interrupted (resolved once it
answers again). Each is failed, its credit released and its key's answer stored."""

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import service as credits
from app.db import utcnow
from app.generation import repository
from app.generation.models import Generation
from app.generation.outcomes import (
    Outcome,
    store,
    stored_failure_outcome,
    unrecorded_outcome,
)


async def fail_interrupted_generations(
    sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 500
) -> int:
    """Generations whose process died mid-call: release their hold (if the sweeper has not),
    mark them failed and store that answer for their `Idempotency-Key`."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            now = utcnow()
            interrupted = await repository.lock_interrupted_generations(session, now, limit)
            for generation in interrupted:
                await _fail_running(
                    session,
                    generation,
                    now,
                    "interrupted: The generation was interrupted.",
                    stored_failure_outcome(generation),
                )
        total += len(interrupted)
        if len(interrupted) < limit:
            return total


async def fail_unrecorded_generations(
    sessionmaker: async_sessionmaker[AsyncSession], generation_ids: Collection[uuid.UUID]
) -> int:
    """Generations whose recording the database interrupted (`unrecorded_outcome`): those
    still running are failed, their credit released and their key freed; those whose
    write did commit before the connection went are left as they are."""
    async with sessionmaker() as session, session.begin():
        now = utcnow()
        running = await repository.lock_running_generations(session, list(generation_ids))
        for generation in running:
            await _fail_running(
                session,
                generation,
                now,
                "database_unavailable: The database stopped answering during the generation.",
                unrecorded_outcome(generation.id, result_at_stake=False),
            )
    return len(running)


async def _fail_running(
    session: AsyncSession, generation: Generation, now: datetime, detail: str, outcome: Outcome
) -> None:
    """A running generation that will not finish: its credit back, failed, its key's answer."""
    await credits.release(session, generation.hold_id, now=now)
    generation.status = "failed"
    generation.error_code = str(outcome.body["code"])
    generation.error_detail = detail
    generation.completed_at = now
    await store(session, generation, outcome)
