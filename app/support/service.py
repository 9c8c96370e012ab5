"""Support's rules: look-ups of generations and the once-only credit-back."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import service as credits
from app.credits.models import LedgerEntry
from app.errors import Conflict, NotFound
from app.support import repository


class AlreadyCreditedBack(Conflict):
    code = "already_credited_back"
    title = "This generation was credited back already"


class NothingToCreditBack(Conflict):
    code = "nothing_to_credit_back"
    title = "This generation charged no credit"


async def list_generations(
    session: AsyncSession,
    *,
    account_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    status: str | None,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
) -> list[Any]:
    return await repository.list_generations(
        session,
        account_id=account_id,
        created_from=created_from,
        created_to=created_to,
        status=status,
        limit=limit,
        before=before,
    )


async def get_generation(
    session: AsyncSession, generation_id: uuid.UUID
) -> tuple[Any, list[LedgerEntry]]:
    found = await repository.find_generation(session, generation_id)
    if found is None:
        raise NotFound("No such generation.")
    entries = await repository.ledger_entries(session, found.account_id, found.id, found.hold_id)
    return found, entries


async def credit_back(session: AsyncSession, generation_id: uuid.UUID, reason: str) -> LedgerEntry:
    """An `adjustment` of `+credits_charged` carrying the generation's id, at most once per
    generation (the ledger's unique index on it), through the same ledger rules (and
    balance events) as any adjustment."""
    found = await repository.find_generation(session, generation_id)
    if found is None:
        raise NotFound("No such generation.")
    if not found.credits_charged:
        raise NothingToCreditBack("It charged no credit, so there is nothing to give back.")
    # Credit-backs of one account queue on its balance row; the unique index backs that up.
    await credits.lock_balance(session, found.account_id)
    if await repository.credit_back_exists(session, found.id):
        raise AlreadyCreditedBack("Its credit was given back before.")
    try:
        async with session.begin_nested():
            return await credits.grant(
                session,
                found.account_id,
                int(found.credits_charged),
                type="adjustment",
                description=f"Credit-back of generation {found.id}: {reason}",
                generation_id=found.id,
                batch_id=found.batch_id,
            )
    except IntegrityError as exc:
        raise AlreadyCreditedBack("Its credit was given back before.") from exc
