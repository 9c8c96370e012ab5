"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is required: each test session creates its own database on the server named
by `TEST_POSTGRES_URL` (default: the local `test` database's server), migrates it with
`alembic upgrade head` and drops it at the end. Set `RANKFRAME_TEST_BACKENDS=sqlite` to
run without PostgreSQL locally; CI never does.
"""

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_sessionmaker
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token-" + "x" * 32
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PGBOUNCER_URL = os.environ.get("TEST_PGBOUNCER_URL")
"""Set by tests/test_pgbouncer.py for the tests it reruns: PostgreSQL databases are made and
migrated directly, and the app (and the tests' own engines) reach them through PgBouncer
in transaction mode, with only the `LISTEN` connection direct."""
BACKENDS = [
    b.strip() for b in os.environ.get("RANKFRAME_TEST_BACKENDS", "sqlite,postgres").split(",")
]


def through_pgbouncer(direct_url: str) -> str:
    if PGBOUNCER_URL is None:
        return direct_url
    database = make_url(direct_url).database
    return make_url(PGBOUNCER_URL).set(database=database).render_as_string(hide_password=False)


def pooler_settings(database_url: str) -> dict[str, str]:
    """The settings an app on `database_url` needs when that is PgBouncer (else none)."""
    if PGBOUNCER_URL is None or not database_url.startswith("postgresql"):
        return {}
    bouncer, url = make_url(PGBOUNCER_URL), make_url(database_url)
    if (url.host, url.port) != (bouncer.host, bouncer.port):
        return {}
    direct = make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG))
    listen = direct.set(database=url.database).render_as_string(hide_password=False)
    return {"db_transaction_pooling": "true", "database_listen_url": listen}


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


async def run_alembic(database_url: str, *steps: tuple[str, str]) -> None:
    """Run alembic commands (its async env needs a loop of its own, so in a thread)."""

    def _run() -> None:
        config = alembic_config(database_url)
        for action, target in steps:
            getattr(command, action)(config, target)

    await asyncio.to_thread(_run)


async def _pg_admin_connection(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database=parsed.database or "postgres",
    )


@dataclass
class Database:
    backend: str
    url: str


@pytest.fixture(scope="session")
async def _postgres_database() -> AsyncIterator[str]:
    base_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)
    name = f"rf_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        admin = await _pg_admin_connection(base_url)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for the test suite ({base_url}): {exc}. Start it, or "
            "set RANKFRAME_TEST_BACKENDS=sqlite to run only the SQLite half locally."
        )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    await run_alembic(url, ("upgrade", "head"))
    yield through_pgbouncer(url)
    admin = await _pg_admin_connection(base_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def _sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    path = tmp_path_factory.mktemp("sqlite") / "rankframe-test.db"
    url = f"sqlite+aiosqlite:///{path}"
    await run_alembic(url, ("upgrade", "head"))
    yield url


@pytest.fixture(scope="session", params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Database:
    backend = request.param
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"unknown backend {backend!r}")
    url = request.getfixturevalue(f"_{backend}_database")
    return Database(backend, url)


def make_settings(database: Database, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database.url,
        "admin_token": ADMIN_TOKEN,
        "starter_credits": 500,
        "trial_days": 7,
        "hold_sweep_interval_seconds": 3600.0,
        # Up to 10 connections per engine: the PostgreSQL server (100 connections) is
        # shared with teammates' test runs and benchmarks.
        "db_pool_size": 5,
        "anthropic_api_key": None,
        "polar_access_token": None,
        "polar_webhook_secret": None,
        **pooler_settings(database.url),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def settings(database: Database) -> Settings:
    return make_settings(database)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class TestAccount:
    id: uuid.UUID
    key: str
    key_id: uuid.UUID

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def new_account(client: httpx.AsyncClient) -> TestAccount:
    response = await client.post(
        "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@example.com"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return TestAccount(
        uuid.UUID(body["account"]["id"]), body["api_key"]["key"], uuid.UUID(body["api_key"]["id"])
    )


async def adjust(
    client: httpx.AsyncClient, account: TestAccount, amount: int, key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        json={"amount": amount, "reason": "test"},
        headers={**ADMIN, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def funded_account(client: httpx.AsyncClient, credits: int) -> TestAccount:
    """A fresh account holding exactly `credits` available (no starter grant)."""
    account = await new_account(client)
    if credits:
        response = await adjust(client, account, credits)
        assert response.status_code == 201, response.text
    return account


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> Database:
    """For behaviour that exists only on PostgreSQL (several server processes, SKIP LOCKED,
    LISTEN/NOTIFY): always PostgreSQL, never parametrized, never skipped."""
    return Database("postgres", request.getfixturevalue("_postgres_database"))
