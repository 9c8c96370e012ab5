"""Service-level helpers for the ledger tests: accounts made and funded through the services."""

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import flows
from app.credits import service
from app.credits.models import CreditHold, LedgerEntry
from app.credits.service import Balance

TTL = timedelta(minutes=5)


async def funded(sessionmaker: async_sessionmaker[AsyncSession], credits: int) -> uuid.UUID:
    """A new account holding exactly `credits` available, via one adjustment entry."""
    async with sessionmaker() as session, session.begin():
        account, _ = await flows.create_account(
            session, f"{uuid.uuid4().hex}@example.com", trial_days=7
        )
        if credits:
            await service.grant(
                session, account.id, credits, type="adjustment", description="funding"
            )
    return account.id


async def balance(sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID) -> Balance:
    async with sessionmaker() as session, session.begin():
        return await service.get_balance(session, account_id)


async def entries(
    sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID
) -> list[LedgerEntry]:
    """The account's ledger, oldest first."""
    async with sessionmaker() as session, session.begin():
        statement = (
            select(LedgerEntry)
            .where(LedgerEntry.account_id == account_id)
            .order_by(LedgerEntry.seq)
        )
        return list((await session.execute(statement)).scalars())


async def hold(sessionmaker: async_sessionmaker[AsyncSession], hold_id: uuid.UUID) -> CreditHold:
    async with sessionmaker() as session, session.begin():
        found = await session.get(CreditHold, hold_id)
        assert found is not None
        return found


async def mismatches_for(
    sessionmaker: async_sessionmaker[AsyncSession], *account_ids: uuid.UUID
) -> list[service.Mismatch]:
    """Reconcile's findings for these accounts (other tests' accounts are not ours to judge)."""
    async with sessionmaker() as session, session.begin():
        found = await service.find_mismatches(session)
    return [m for m in found if m.account_id in account_ids]
