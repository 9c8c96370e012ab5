"""The single generation's fast path on PostgreSQL: the reserve and the charge as one
statement each. What they write is what the ORM path writes; when they cannot act they
change nothing and the ORM path decides (its errors are tested in test_generations.py)."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.accounts.models import Account, Site
from app.credits.models import CreditBalance, CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker, utcnow
from app.generation import fast_path, single
from app.generation.models import Generation
from app.generation.providers.base import GenerationKind, ProviderResult
from app.idempotency import IdempotencyRecord, IdempotentRequest, account_scope
from tests.apps import asgi_client, customer, running_app
from tests.conftest import make_settings
from tests.databases import Database, create_database, drop_database
from tests.generation.conftest import FAST, assert_reconciles

PAYLOAD = {"page_content": "Solid oak tables made by hand in Vermont since 1998."}
RESULT = ProviderResult(
    output={"text": "Handmade Oak Tables"},
    model="claude-test",
    input_tokens=40,
    output_tokens=6,
    latency_ms=12,
)


@pytest.fixture(scope="module")
async def pg(tmp_path_factory, fake_anthropic):
    url = await create_database("postgres", str(tmp_path_factory.mktemp("fast")))
    settings = make_settings(
        Database("postgres", url),
        anthropic_base_url=fake_anthropic.url,
        # No balance alerts: a reserve crossing the threshold is left to the ORM path
        # (tests/outbound/test_fast_path_alerts.py), and these customers hold few credits.
        low_balance_threshold=0,
        **FAST,
    )
    engine = create_engine(settings)
    async with running_app(settings) as application, asgi_client(application, timeout=60) as client:
        yield application, client, create_sessionmaker(engine)
    await engine.dispose()
    await drop_database(url)


async def state(sessionmaker, account_id):
    async with sessionmaker() as session:
        balance = await session.get(CreditBalance, account_id, populate_existing=True)
        holds = (
            (await session.execute(select(CreditHold).where(CreditHold.account_id == account_id)))
            .scalars()
            .all()
        )
        generations = (
            (await session.execute(select(Generation).where(Generation.account_id == account_id)))
            .scalars()
            .all()
        )
        entries = (
            (
                await session.execute(
                    select(LedgerEntry)
                    .where(LedgerEntry.account_id == account_id)
                    .order_by(LedgerEntry.seq)
                )
            )
            .scalars()
            .all()
        )
        return (balance.available, balance.reserved), holds, generations, entries


async def summary(sessionmaker, account_id):
    """`state` as comparable values."""
    balance, holds, generations, entries = await state(sessionmaker, account_id)
    return (
        balance,
        sorted((h.id, h.status, h.amount, h.consumed, h.expires_at) for h in holds),
        sorted((g.id, g.status, g.credits_charged, g.output) for g in generations),
        [(e.seq, e.type, e.amount, e.balance_after) for e in entries],
    )


async def load_account(sessionmaker, account_id) -> Account:
    async with sessionmaker() as session:
        return await session.get(Account, account_id)


async def reserve_fast(application, account, site_id, key=None):
    runtime = application.state.generation
    return await fast_path.reserve(
        runtime.statements,
        runtime.settings,
        account,
        uuid.UUID(str(site_id)),
        GenerationKind.META_TITLE,
        PAYLOAD,
        IdempotentRequest(account_scope(account.id), key, "fingerprint"),
        uuid.uuid4(),
    )


async def test_reserve_then_charge_write_what_the_ledger_rules_require(pg):
    application, client, sessionmaker = pg
    who = await customer(client, 5)
    account = await load_account(sessionmaker, who.id)

    started = await reserve_fast(application, account, who.site_id)
    assert started is not None
    balance, [hold], [generation], entries = await state(sessionmaker, who.id)
    assert balance == (4, 1)
    assert (hold.id, hold.amount, hold.status) == (started.hold_id, 1, "open")
    assert hold.reference == f"generation:{started.generation_id}"
    assert hold.expires_at == generation.expires_at
    assert (generation.id, generation.status, generation.input) == (
        started.generation_id,
        "running",
        PAYLOAD,
    )
    assert [e.type for e in entries] == ["adjustment"]

    outcome = await fast_path.charge(application.state.statements, started, RESULT)
    assert outcome is not None and outcome.status_code == 201
    assert outcome.body["balance"]["available"] == 4
    assert outcome.body["balance"]["reserved"] == 0
    assert outcome.body["balance"]["display"] == "4 Credits"
    assert (outcome.body["output"], outcome.body["credits_charged"]) == (RESULT.output, 1)
    balance, [hold], [generation], entries = await state(sessionmaker, who.id)
    assert balance == (4, 0)
    assert (hold.status, hold.consumed, hold.resolved_at is not None) == ("settled", 1, True)
    assert (generation.status, generation.output, generation.credits_charged) == (
        "succeeded",
        RESULT.output,
        1,
    )
    assert (generation.model, generation.input_tokens, generation.output_tokens) == (
        "claude-test",
        40,
        6,
    )
    assert [(e.type, e.amount, e.balance_after) for e in entries] == [
        ("adjustment", 5, 5),
        ("consumption", -1, 4),
    ]
    assert (entries[1].hold_id, entries[1].generation_id) == (hold.id, generation.id)
    assert entries[1].description == "AI generation: meta title"
    await assert_reconciles(sessionmaker)


async def test_the_reserve_changes_nothing_when_it_cannot_reserve(pg):
    application, client, sessionmaker = pg
    broke = await customer(client, 0)
    other = await customer(client, 3)
    removed = await customer(client, 3)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Site).where(Site.id == uuid.UUID(removed.site_id)).values(deleted_at=utcnow())
        )
    cases = [
        (broke, broke.site_id),  # no credits
        (other, broke.site_id),  # someone else's site
        (removed, removed.site_id),  # a deleted site
        (other, uuid.uuid4()),  # no such site
    ]
    for who, site_id in cases:
        before = await summary(sessionmaker, who.id)
        account = await load_account(sessionmaker, who.id)
        assert await reserve_fast(application, account, site_id) is None
        assert await summary(sessionmaker, who.id) == before


async def test_a_refused_reserve_gives_its_idempotency_claim_back(pg):
    application, client, sessionmaker = pg
    broke = await customer(client, 0)
    account = await load_account(sessionmaker, broke.id)
    assert await reserve_fast(application, account, broke.site_id, key="k-1") is None
    async with sessionmaker() as session:
        claims = await session.scalar(
            select(func.count()).where(IdempotencyRecord.scope == f"account:{broke.id}")
        )
    assert claims == 0


async def test_the_charge_changes_nothing_for_an_expired_hold_and_the_orm_path_releases_it(pg):
    application, client, sessionmaker = pg
    who = await customer(client, 2)
    account = await load_account(sessionmaker, who.id)
    started = await reserve_fast(application, account, who.site_id)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(CreditHold)
            .where(CreditHold.id == started.hold_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    before = await summary(sessionmaker, who.id)
    assert await fast_path.charge(application.state.statements, started, RESULT) is None
    assert await summary(sessionmaker, who.id) == before

    outcome = await single._finish(application.state.generation, started, RESULT)
    assert (outcome.status_code, outcome.body["reason"]) == (502, "reservation_expired")
    balance, [hold], [generation], entries = await state(sessionmaker, who.id)
    assert balance == (2, 0)
    assert (hold.status, generation.status, generation.credits_charged) == ("expired", "failed", 0)
    assert [e.type for e in entries] == ["adjustment"]
    await assert_reconciles(sessionmaker)


async def test_the_charge_changes_nothing_once_the_generation_is_no_longer_running(pg):
    application, client, sessionmaker = pg
    who = await customer(client, 2)
    account = await load_account(sessionmaker, who.id)
    started = await reserve_fast(application, account, who.site_id)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Generation).where(Generation.id == started.generation_id).values(status="failed")
        )
    before = await summary(sessionmaker, who.id)
    assert await fast_path.charge(application.state.statements, started, RESULT) is None
    assert await summary(sessionmaker, who.id) == before


async def test_a_keyed_generation_stores_its_answer_and_replays_it(pg):
    _, client, sessionmaker = pg
    who = await customer(client, 3)
    headers = {**who.auth, "Idempotency-Key": "fast-key-1"}
    body = {"kind": "meta_title", "site_id": who.site_id, "input": PAYLOAD}
    first = await client.post("/v1/generations", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/generations", json=body, headers=headers)
    assert (again.status_code, again.json()) == (201, first.json())
    async with sessionmaker() as session:
        record = (
            await session.execute(
                select(IdempotencyRecord).where(IdempotencyRecord.key == "fast-key-1")
            )
        ).scalar_one()
    assert (record.status_code, record.response_body) == (201, first.json())
    balance, holds, generations, entries = await state(sessionmaker, who.id)
    assert balance == (2, 0)
    assert len(generations) == 1 and generations[0].idempotency_record_id == record.id
    assert [e.amount for e in entries] == [3, -1]
