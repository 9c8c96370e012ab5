"""Generation tests run against the stand-in Claude API, on databases of their own.

Their own databases, because every app instance runs batch workers that claim items from
its database: the session-wide `app` of other tests (offline provider) must not work the
batches these tests start against the stand-in."""

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.credits import service as credits
from app.credits.models import CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker
from tests.apps import Customer, asgi_client, make_settings, running_app
from tests.databases import Database, database_of_its_own
from tests.fakes.anthropic_server import FakeAnthropic

FAST = {
    "starter_credits": 0,
    "anthropic_api_key": "sk-ant-test",
    "anthropic_timeout_seconds": 1.0,
    "anthropic_max_retries": 2,
    "generation_timeout_seconds": 20.0,
    "hold_ttl_seconds": 60,
    "batch_hold_ttl_seconds": 30,
    "batch_lease_seconds": 3.0,
    "batch_heartbeat_interval_seconds": 1.0,
    "batch_poll_interval_seconds": 0.2,
    "batch_events_interval_seconds": 0.05,
    "sse_ping_interval_seconds": 0.5,
    "economy_poll_interval_seconds": 0.2,
}


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


gen_database = database_of_its_own("gen_database")


@pytest.fixture(scope="session")
def gen_settings(gen_database: Database, fake_anthropic: FakeAnthropic) -> Settings:
    return make_settings(gen_database, anthropic_base_url=fake_anthropic.url, **FAST)


@pytest.fixture(scope="session")
async def gen_app(gen_settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(gen_settings) as application:
        yield application


@pytest.fixture(scope="session")
async def gen_client(gen_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(gen_app, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
async def gen_sessionmaker(
    gen_settings: Settings,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(gen_settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def balance_of(client: httpx.AsyncClient, who: Customer) -> dict:
    response = await client.get("/v1/balance", headers=who.auth)
    assert response.status_code == 200
    return response.json()


async def consumption_entries(
    sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID
) -> list[LedgerEntry]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(LedgerEntry).where(
                LedgerEntry.account_id == account_id, LedgerEntry.type == "consumption"
            )
        )
        return list(rows.scalars())


async def open_holds(
    sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID
) -> list[CreditHold]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(CreditHold).where(
                CreditHold.account_id == account_id, CreditHold.status == "open"
            )
        )
        return list(rows.scalars())


async def assert_reconciles(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session, session.begin():
        mismatches = await credits.find_mismatches(session)
    assert mismatches == [], [m.describe() for m in mismatches]
