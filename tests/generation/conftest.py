"""Generation tests run against the stand-in Claude API, on databases of their own.

Their own databases, because every app instance runs batch workers that claim items from
its database: the session-wide `app` of other tests (offline provider) must not work the
batches these tests start against the stand-in."""

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.credits import service as credits
from app.credits.models import CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from tests.conftest import (
    BACKENDS,
    DEFAULT_PG,
    Database,
    TestAccount,
    _pg_admin_connection,
    funded_account,
    make_settings,
    run_alembic,
)
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


async def create_database(backend: str, tmp_dir: str) -> str:
    """A new, migrated database on `backend`."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_dir}/generation-{secrets.token_hex(4)}.db"
    else:
        base_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)
        name = f"rf_gen_{os.getpid()}_{secrets.token_hex(4)}"
        admin = await _pg_admin_connection(base_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    await run_alembic(url, ("upgrade", "head"))
    return url


async def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    admin = await _pg_admin_connection(os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session", params=BACKENDS)
async def gen_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    url = await create_database(request.param, str(tmp_path_factory.mktemp("gen")))
    yield Database(request.param, url)
    await drop_database(url)


@pytest.fixture(scope="session")
def gen_settings(gen_database: Database, fake_anthropic: FakeAnthropic) -> Settings:
    return make_settings(gen_database, anthropic_base_url=fake_anthropic.url, **FAST)


@pytest.fixture(scope="session")
async def gen_app(gen_settings: Settings) -> AsyncIterator[object]:
    application = create_app(gen_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def gen_client(gen_app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gen_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="session")
async def gen_sessionmaker(
    gen_settings: Settings,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(gen_settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@dataclass
class Customer:
    """A funded account with a connected site."""

    account: TestAccount
    site_id: str

    @property
    def auth(self) -> dict[str, str]:
        return self.account.auth

    @property
    def id(self) -> uuid.UUID:
        return self.account.id


async def customer(client: httpx.AsyncClient, credits_: int) -> Customer:
    account = await funded_account(client, credits_)
    response = await client.post(
        "/v1/sites",
        json={"framer_project_id": uuid.uuid4().hex, "name": "Vermont Woodworks"},
        headers=account.auth,
    )
    assert response.status_code == 201, response.text
    return Customer(account, response.json()["id"])


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
