"""Alembic makes the schema on both databases, and takes it down and up again cleanly."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.config import Settings
from app.db import create_engine
from app.models import Base
from tests.conftest import run_alembic
from tests.databases import fresh_database

TRIGGERS = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ledger_entry'",
    "postgres": "SELECT tgname FROM pg_trigger WHERE tgrelid = 'ledger_entry'::regclass "
    "AND NOT tgisinternal",
}


async def inspect_schema(url: str, backend: str) -> tuple[set[str], set[str], list]:
    """Tables, ledger triggers, and what differs between the models and the database."""
    engine = create_engine(Settings(_env_file=None, database_url=url))

    def _inspect(connection):
        tables = set(inspect(connection).get_table_names())
        if "ledger_entry" not in tables:
            return tables, set(), []
        triggers = {row[0] for row in connection.execute(text(TRIGGERS[backend]))}
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        return tables, triggers, differences

    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_inspect)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_upgrade_downgrade_upgrade_on_a_fresh_database(backend, tmp_path):
    async with fresh_database(backend, tmp_path) as url:
        await run_alembic(url, ("upgrade", "head"))
        tables, triggers, _ = await inspect_schema(url, backend)
        assert set(Base.metadata.tables) <= tables
        assert triggers

        await run_alembic(url, ("downgrade", "base"))
        tables, _, _ = await inspect_schema(url, backend)
        assert tables <= {"alembic_version"}

        await run_alembic(url, ("upgrade", "head"))
        tables, triggers_again, differences = await inspect_schema(url, backend)
    assert set(Base.metadata.tables) <= tables
    assert {"account", "api_key", "site", "credit_balance", "credit_hold", "ledger_entry"} <= tables
    assert triggers_again == triggers
    # The migrations make exactly the schema the models describe.
    assert differences == []
