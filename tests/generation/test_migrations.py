"""The generations migration survives upgrade / downgrade / upgrade on both databases."""

import pytest
from sqlalchemy import inspect

from app.config import Settings
from app.db import create_engine
from tests.conftest import BACKENDS, run_alembic
from tests.databases import create_database, drop_database

TABLES = {"generation", "generation_batch", "generation_batch_item"}


async def tables(url: str) -> set[str]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_generation_tables_survive_a_downgrade_and_upgrade(backend, tmp_path):
    url = await create_database(backend, str(tmp_path))
    try:
        assert await tables(url) >= TABLES
        await run_alembic(url, ("downgrade", "0001"))
        assert not TABLES & await tables(url)
        await run_alembic(url, ("downgrade", "base"), ("upgrade", "head"))
        assert await tables(url) >= TABLES
        await run_alembic(url, ("downgrade", "base"))
        assert await tables(url) <= {"alembic_version"}
        await run_alembic(url, ("upgrade", "head"))
        assert await tables(url) >= TABLES
    finally:
        await drop_database(url)
