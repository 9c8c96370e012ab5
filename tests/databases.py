"""The one way tests make databases: scratch SQLite files and scratch PostgreSQL databases
on the server named by `TEST_POSTGRES_URL` (default: the local `test` database's server),
empty or migrated with `alembic upgrade head`, and dropped when the test is done.

Under tests/test_pgbouncer.py (`TEST_PGBOUNCER_URL` set), PostgreSQL databases are made
and migrated directly, and the app (and the tests' own engines) reach them through
PgBouncer in transaction mode, with only the `LISTEN` connection direct."""

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PGBOUNCER_URL = os.environ.get("TEST_PGBOUNCER_URL")
BACKENDS = [
    b.strip() for b in os.environ.get("RANKFRAME_TEST_BACKENDS", "sqlite,postgres").split(",")
]


@dataclass
class Database:
    backend: str
    url: str


def postgres_server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)


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
    direct = make_url(postgres_server_url())
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


async def pg_connect(url: str) -> asyncpg.Connection:
    """A plain asyncpg connection to the database of a SQLAlchemy URL (the server's
    maintenance database when the URL names none)."""
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database=parsed.database or "postgres",
    )


async def _administer(statement: str) -> None:
    admin = await pg_connect(postgres_server_url())
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def create_postgres(prefix: str) -> str:
    """The direct URL of a new, empty PostgreSQL database named `<prefix>_<pid>_<random>`."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    await _administer(f'CREATE DATABASE "{name}"')
    return make_url(postgres_server_url()).set(database=name).render_as_string(hide_password=False)


async def drop_postgres(url: str) -> None:
    """Drop the database `url` names (direct or through PgBouncer), connections and all."""
    await _administer(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def sqlite_url(directory: Path | str, stem: str) -> str:
    return f"sqlite+aiosqlite:///{directory}/{stem}-{secrets.token_hex(4)}.db"


async def create_database(backend: str, tmp_dir: Path | str, prefix: str = "rf_gen") -> str:
    """A new, migrated database on `backend`, as the app should reach it."""
    if backend == "sqlite":
        url = sqlite_url(tmp_dir, "generation")
    else:
        url = await create_postgres(prefix)
    await run_alembic(url, ("upgrade", "head"))
    return through_pgbouncer(url)


async def drop_database(url: str) -> None:
    """Drop what `create_database` made (a SQLite file stays with its temp directory)."""
    if url.startswith("postgresql"):
        await drop_postgres(url)


@contextlib.asynccontextmanager
async def migrated_database(
    backend: str, tmp_dir: Path | str, prefix: str = "rf_gen"
) -> AsyncIterator[Database]:
    """`create_database` and, on exit, `drop_database`."""
    url = await create_database(backend, tmp_dir, prefix)
    try:
        yield Database(backend, url)
    finally:
        await drop_database(url)


@contextlib.asynccontextmanager
async def migrated_sessionmaker(backend: str, tmp_dir: Path | str) -> AsyncIterator[Any]:
    """A migrated database with no app (so no worker claims anything): its session
    factory; on exit the engine is disposed and the database dropped."""
    from app.config import Settings
    from app.db import create_engine, create_sessionmaker

    async with migrated_database(backend, tmp_dir) as made:
        engine = create_engine(Settings(_env_file=None, database_url=made.url))  # type: ignore[call-arg]
        try:
            yield create_sessionmaker(engine)
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, unmigrated database: a temp SQLite file, or a PostgreSQL database
    created here and dropped on exit."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path, "fresh")
        return
    url = await create_postgres("rf_fresh")
    try:
        yield url
    finally:
        await drop_postgres(url)


def database_of_its_own(name: str) -> Any:
    """A session fixture `name`: a migrated database on each backend (the test's id says
    which) that no other fixture's app works, for apps whose background workers must see
    only their own tests' rows (batch workers, the events dispatcher)."""

    @pytest.fixture(scope="session", params=BACKENDS, name=name)
    async def fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> AsyncIterator[Database]:
        async with migrated_database(request.param, tmp_path_factory.mktemp(name)) as made:
            yield made

    return fixture
