"""The account's generation rate bucket on the ORM path (single generations and batches
alike). The bucket lives in the account's balance row; its one definition is the ledger's
(`app.credits.repository.RATE_TOKENS`), which the fast reserve's statement uses too."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.credits import repository as credits_repository
from app.db import utcnow
from app.errors import RateLimited


async def spend_rate_token(
    session: AsyncSession, settings: Settings, account_id: uuid.UUID
) -> None:
    """PostgreSQL: one token of the account's generation bucket (in its balance row, for
    every process and instance), or `RateLimited`. A request refused later in the same
    transaction (402) gives it back with the rollback: only reservations spend tokens.
    SQLite: the route's in-process bucket already decided."""
    if settings.is_sqlite:
        return
    wait = await credits_repository.spend_rate_token(
        session,
        account_id,
        now=utcnow(),
        per_second=settings.rate_limit_generations_per_minute / 60,
        burst=settings.rate_limit_generations_burst,
    )
    if wait > 0:
        raise RateLimited.wait("generations", wait)
