"""The ledger's two spellings of a one-credit hold write the same rows (PostgreSQL).

The fast path (`app.credits.statements`, run by `app.generation.fast_path`) and the ORM path
(`app.credits.service`, run by `app.generation.single`) each serve one of two identical
customers; after every step their balance, holds, ledger entries and generation rows are
compared, minus ids and timestamps. Reserve and settle (the charge) have a statement each;
release and expiry have one spelling, the ORM's, and a hold the fast path opened must
resolve there exactly as one the ORM opened."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.credits import service as credits
from app.credits.models import CreditBalance, CreditHold
from app.db import utcnow
from app.generation import fast_path, single
from app.generation.models import Generation
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
)
from tests.apps import customer
from tests.generation.conftest import fake_anthropic
from tests.generation.test_fast_path import PAYLOAD, RESULT, load_account, pg, reserve_fast, state

pytestmark = pytest.mark.postgres_only
__all__ = ["fake_anthropic", "pg"]  # the fixtures, shared with test_fast_path (alerts off)

FAILURE = ProviderError(
    FailureKind.FAILED, "invalid_output", "The model answered nothing usable.", model="m"
)


async def rows(sessionmaker, account_id):
    """The account's ledger rows without ids and timestamps (references to each other kept
    as whether they point at the account's own generation and hold)."""
    _, holds, generations, entries = await state(sessionmaker, account_id)
    async with sessionmaker() as session:
        balance = await session.get(CreditBalance, account_id, populate_existing=True)
    hold_ids = {hold.id for hold in holds}
    generation_ids = {generation.id for generation in generations}
    return {
        "balance": (
            balance.available,
            balance.reserved,
            balance.rate_tokens,
            balance.alert_state,
            balance.low_balance_threshold,
        ),
        "holds": sorted(
            (
                hold.amount,
                hold.consumed,
                hold.status,
                hold.reference.removeprefix("generation:") in {str(g) for g in generation_ids},
                hold.expires_at - hold.created_at,
                hold.resolved_at is not None,
            )
            for hold in holds
        ),
        "entries": [
            (
                entry.type,
                entry.amount,
                entry.balance_after,
                entry.description,
                entry.hold_id in hold_ids if entry.hold_id else None,
                entry.generation_id in generation_ids if entry.generation_id else None,
                entry.batch_id,
            )
            for entry in entries
        ],
        "generations": sorted(
            (
                generation.kind,
                generation.status,
                generation.input,
                generation.output,
                generation.credits_charged,
                generation.model,
                generation.input_tokens,
                generation.output_tokens,
                generation.error_code,
                generation.hold_id in hold_ids,
                generation.idempotency_record_id,
                generation.completed_at is not None,
            )
            for generation in generations
        ),
    }


async def two_customers(client, credits_):
    """Two customers alike: one for the fast path, one for the ORM path."""
    return await customer(client, credits_), await customer(client, credits_)


async def reserve_fast_for(application, sessionmaker, who) -> fast_path.FastReserved:
    reserved = await reserve_fast(
        application, await load_account(sessionmaker, who.id), who.site_id
    )
    assert reserved is not None
    return reserved


async def reserve_orm(application, who) -> single.Reserved:
    runtime = application.state.generation
    async with runtime.sessionmaker() as session, session.begin():
        return await single._reserve(
            session,
            runtime.settings,
            who.id,
            uuid.UUID(str(who.site_id)),
            GenerationKind.META_TITLE,
            PAYLOAD,
            None,
            uuid.uuid4(),
        )


async def test_reserve_writes_the_same_rows_on_both_paths(pg):
    application, client, sessionmaker = pg
    fast, orm = await two_customers(client, 5)
    await reserve_fast_for(application, sessionmaker, fast)
    await reserve_orm(application, orm)

    written = await rows(sessionmaker, fast.id)
    assert written["balance"][:2] == (4, 1)
    assert written["holds"] == [(1, 0, "open", True, timedelta(seconds=60), False)]
    assert written == await rows(sessionmaker, orm.id)


async def test_settle_writes_the_same_rows_on_both_paths(pg):
    application, client, sessionmaker = pg
    runtime = application.state.generation
    fast, orm = await two_customers(client, 5)
    charged = await fast_path.charge(
        runtime.statements, await reserve_fast_for(application, sessionmaker, fast), RESULT
    )
    assert charged is not None and charged.status_code == 201
    settled = await single._finish(runtime, await reserve_orm(application, orm), RESULT)
    assert settled.status_code == 201
    without_time = {"as_of": None}
    assert {**charged.body["balance"], **without_time} == {
        **settled.body["balance"],
        **without_time,
    }

    written = await rows(sessionmaker, fast.id)
    assert written["balance"][:2] == (4, 0)
    assert written["entries"][-1] == (
        "consumption",
        -1,
        4,
        "AI generation: meta title",
        True,
        True,
        None,
    )
    assert written == await rows(sessionmaker, orm.id)


async def test_release_of_a_fast_reserved_hold_writes_what_the_orm_path_writes(pg):
    application, client, sessionmaker = pg
    runtime = application.state.generation
    fast, orm = await two_customers(client, 3)
    failed_fast = await single._finish(
        runtime, await reserve_fast_for(application, sessionmaker, fast), FAILURE
    )
    failed_orm = await single._finish(runtime, await reserve_orm(application, orm), FAILURE)
    assert failed_fast.status_code == failed_orm.status_code == 502

    written = await rows(sessionmaker, fast.id)
    assert written["balance"][:2] == (3, 0)
    assert written["holds"] == [(1, 0, "released", True, timedelta(seconds=60), True)]
    assert written == await rows(sessionmaker, orm.id)


async def test_expiry_of_a_fast_reserved_hold_writes_what_the_orm_path_writes(pg):
    application, client, sessionmaker = pg
    fast, orm = await two_customers(client, 3)
    holds = [
        (await reserve_fast_for(application, sessionmaker, fast)).hold_id,
        (await reserve_orm(application, orm)).generation_id,
    ]
    async with sessionmaker() as session, session.begin():
        orm_hold = (
            await session.execute(select(Generation.hold_id).where(Generation.id == holds[1]))
        ).scalar_one()
        now = utcnow()
        for hold_id in (holds[0], orm_hold):
            # Both ran out a second ago (the TTL they were made with is kept).
            await session.execute(
                update(CreditHold)
                .where(CreditHold.id == hold_id)
                .values(
                    created_at=now - timedelta(seconds=61), expires_at=now - timedelta(seconds=1)
                )
            )
        expired = await credits.expire_due(session)
    assert expired >= 2

    written = await rows(sessionmaker, fast.id)
    assert written["balance"][:2] == (3, 0)
    assert [hold[2] for hold in written["holds"]] == ["expired"]
    assert written == await rows(sessionmaker, orm.id)
