"""Racing writers against one account: nothing lost, invented or double counted."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.credits import service
from app.credits.service import HoldOutcome, InsufficientCredits
from app.db import create_engine, create_sessionmaker
from tests.conftest import make_settings
from tests.credits.ledger_helpers import TTL, balance, entries, funded, hold

RACING_CONNECTIONS = 20


@pytest.fixture
async def racing(database) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """An engine of its own for the racers: up to 20 connections (on PostgreSQL) open at
    once, closed after the test so the shared server gets them back."""
    engine = create_engine(make_settings(database, db_pool_size=RACING_CONNECTIONS // 2))
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def all_mismatches(sessionmaker):
    async with sessionmaker() as session, session.begin():
        return await service.find_mismatches(session)


async def test_100_concurrent_reservations_of_1_against_10_exactly_10_succeed(sessionmaker, racing):
    account_id = await funded(sessionmaker, 10)

    async def reserve_one(index):
        # Each attempt in its own session and transaction, on a connection of its own
        # while it runs (PostgreSQL: 20 at a time; SQLite: writers queue for the lock).
        async with racing() as session, session.begin():
            return await service.reserve(session, account_id, 1, ttl=TTL, reference=f"r:{index}")

    results = await asyncio.gather(*(reserve_one(i) for i in range(100)), return_exceptions=True)

    held = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(held) == 10
    assert len(refused) == 90
    assert all(isinstance(r, InsufficientCredits) for r in refused), refused[:3]
    assert all(r.extra["needed"] == 1 and r.extra["available"] == 0 for r in refused)
    assert (await balance(sessionmaker, account_id)) == service.Balance(0, 10)
    assert len({h.id for h in held}) == 10
    assert await all_mismatches(sessionmaker) == []


async def test_racing_settle_release_and_expire_resolve_each_hold_exactly_once(
    sessionmaker, racing
):
    account_id = await funded(sessionmaker, 20)
    async with sessionmaker() as session, session.begin():
        holds = await service.reserve_many(
            session, account_id, [2] * 10, ttl=TTL, references=[f"h:{i}" for i in range(10)]
        )
    # Expiry is judged at a time past every hold's end, so the sweeper races for all of them.
    after_expiry = max(h.expires_at for h in holds) + timedelta(seconds=1)

    async def settle(hold_id):
        async with racing() as session, session.begin():
            return [await service.settle(session, hold_id, 2, description="race")]

    async def release(hold_id):
        async with racing() as session, session.begin():
            return [await service.release(session, hold_id)]

    async def expire():
        async with racing() as session, session.begin():
            await service.expire_due(session, now=after_expiry)
        return []

    attempts = []
    for h in holds:
        attempts += [settle(h.id), release(h.id), settle(h.id), release(h.id)]
    attempts += [expire() for _ in range(5)]
    results = [r for batch in await asyncio.gather(*attempts) for r in batch]

    by_hold = {h.id: [r for r in results if r.hold_id == h.id] for h in holds}
    expected_available = 20
    settled = []
    for h in holds:
        stored = await hold(sessionmaker, h.id)
        assert stored.status in ("settled", "released", "expired")
        changed = [r for r in by_hold[h.id] if r.changed]
        # At most one settle/release changed the hold, and none did if the sweeper got it.
        if stored.status == "expired":
            assert changed == []
        else:
            assert len(changed) == 1
            assert changed[0].status == stored.status
        assert all(
            r.outcome is HoldOutcome.ALREADY_RESOLVED for r in by_hold[h.id] if not r.changed
        )
        if stored.status == "settled":
            expected_available -= 2
            settled.append(h.id)
    consumptions = [e for e in await entries(sessionmaker, account_id) if e.type == "consumption"]
    assert sorted(e.hold_id for e in consumptions) == sorted(settled)
    assert all(e.amount == -2 for e in consumptions)
    assert (await balance(sessionmaker, account_id)) == service.Balance(expected_available, 0)
    assert await all_mismatches(sessionmaker) == []
