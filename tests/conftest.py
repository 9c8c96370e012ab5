"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is required: each test session creates its own database on the server named
by `TEST_POSTGRES_URL` (default: the local `test` database's server), migrates it with
`alembic upgrade head` and drops it at the end. Set `RANKFRAME_TEST_BACKENDS=sqlite` to
run without PostgreSQL locally; CI never does.

How databases are made is tests/databases.py; the app, its clients and test accounts are
tests/apps.py. Their names are imported here too, for the modules that take them from
`tests.conftest`.
"""

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_sessionmaker
from tests.apps import (
    ADMIN,
    ADMIN_TOKEN,
    TestAccount,
    adjust,
    asgi_client,
    funded_account,
    make_settings,
    new_account,
    running_app,
)
from tests.databases import (
    BACKENDS,
    DEFAULT_PG,
    PGBOUNCER_URL,
    ROOT,
    Database,
    alembic_config,
    create_postgres,
    drop_postgres,
    pooler_settings,
    postgres_server_url,
    run_alembic,
    sqlite_url,
    through_pgbouncer,
)

__all__ = [
    "ADMIN",
    "ADMIN_TOKEN",
    "BACKENDS",
    "DEFAULT_PG",
    "PGBOUNCER_URL",
    "ROOT",
    "Database",
    "TestAccount",
    "adjust",
    "alembic_config",
    "funded_account",
    "make_settings",
    "new_account",
    "pooler_settings",
    "run_alembic",
    "through_pgbouncer",
]


@pytest.fixture(scope="session")
async def _postgres_database() -> AsyncIterator[str]:
    try:
        url = await create_postgres("rf_test")
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for the test suite ({postgres_server_url()}): {exc}. "
            "Start it, or set RANKFRAME_TEST_BACKENDS=sqlite to run only the SQLite half "
            "locally."
        )
    await run_alembic(url, ("upgrade", "head"))
    yield through_pgbouncer(url)
    await drop_postgres(url)


@pytest.fixture(scope="session")
async def _sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    url = sqlite_url(tmp_path_factory.mktemp("sqlite"), "rankframe-test")
    await run_alembic(url, ("upgrade", "head"))
    yield url


@pytest.fixture(scope="session", params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Database:
    backend = request.param
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"unknown backend {backend!r}")
    url = request.getfixturevalue(f"_{backend}_database")
    return Database(backend, url)


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> Database:
    """For behaviour that exists only on PostgreSQL (several server processes, SKIP LOCKED,
    LISTEN/NOTIFY): always PostgreSQL, never parametrized, never skipped."""
    return Database("postgres", request.getfixturevalue("_postgres_database"))


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
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c
