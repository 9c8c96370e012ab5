from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from tests.databases import create_postgres, drop_postgres, run_alembic

PAYMENT_TABLES = {"purchase_intent", "webhook_event"}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _upgrade_downgrade_upgrade(url: str) -> None:
    await run_alembic(url, ("upgrade", "head"))
    assert await _tables(url) >= PAYMENT_TABLES
    await run_alembic(url, ("downgrade", "0002"))
    tables = await _tables(url)
    assert not PAYMENT_TABLES & tables
    assert "ledger_entry" in tables
    await run_alembic(url, ("downgrade", "base"), ("upgrade", "head"))
    assert await _tables(url) >= PAYMENT_TABLES


async def test_migration_0003_round_trips_on_sqlite(tmp_path):
    await _upgrade_downgrade_upgrade(f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}")


async def test_migration_0003_round_trips_on_postgres(postgres_database):
    url = await create_postgres("rf_migrate")
    try:
        await _upgrade_downgrade_upgrade(url)
    finally:
        await drop_postgres(url)
