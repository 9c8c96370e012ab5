"""Pooled PostgreSQL connections: those the server closed are replaced, without a ping; the
driver's kept connections are opened and prepared at start-up."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.db import StatementRunner
from app.main import warm_up, warm_up_statements
from tests.apps import asgi_client, running_app
from tests.conftest import funded_account, make_settings
from tests.servers import free_port


async def test_connections_the_server_closed_are_replaced_at_checkout(postgres_database):
    # One pooled connection, so the one the server closes is the one checked out next.
    settings = make_settings(postgres_database, db_pool_pre_ping=False, db_pool_size=1)
    async with running_app(settings) as application, asgi_client(application) as client:
        account = await funded_account(client, 3)
        engine = application.state.engine
        pids = []
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            pids.append(raw.driver_connection.get_server_pid())
        # What a database restart does to idle pooled connections.
        admin = await asyncpg.connect(postgres_database.url.replace("+asyncpg", ""))
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                "pg_stat_activity WHERE pid = ANY($1::int[])) AS t",
                pids,
            )
        finally:
            await admin.close()
        assert killed == 1
        await asyncio.sleep(0.2)  # the close reaches the idle connection's socket
        # A transaction (an adjustment) checks out a pooled connection: not a 503.
        response = await client.post(
            f"/v1/admin/accounts/{account.id}/adjustments",
            json={"amount": 2, "reason": "after a restart"},
            headers={
                "Authorization": f"Bearer {settings.admin_token.get_secret_value()}",
                "Idempotency-Key": "after-restart",
            },
        )
        assert response.status_code == 201, response.text
        balance = await client.get("/v1/balance", headers=account.auth)
        assert balance.json()["available"] == 5


@contextlib.asynccontextmanager
async def statement_runner(database, *, keep: int) -> AsyncIterator[StatementRunner]:
    """A runner keeping `keep` connections of a pool of twice as many."""
    pool = await asyncpg.create_pool(
        database.url.replace("+asyncpg", ""), min_size=0, max_size=2 * keep
    )
    runner = StatementRunner(pool, keep=keep)
    try:
        yield runner
    finally:
        await runner.close()
        await asyncio.wait_for(pool.close(), timeout=5)


async def test_the_statement_runner_keeps_connections_and_gives_back_broken_ones(
    postgres_database,
):
    async with statement_runner(postgres_database, keep=2) as runner:
        # More concurrent statements than kept connections: the rest use the pool.
        values = await asyncio.gather(
            *(runner.fetchrow("SELECT $1::int AS v, pg_sleep(0.05)", n) for n in range(10))
        )
        assert [row["v"] for row in values] == list(range(10))
        assert (runner._kept, len(runner._idle)) == (2, 2)

        with pytest.raises(asyncpg.DivisionByZeroError):
            await runner.fetchrow("SELECT 1 / 0")
        assert (runner._kept, len(runner._idle)) == (1, 1)

        slow = asyncio.create_task(runner.fetchrow("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The cancelled statement's connection went back to the pool, not to the runner.
        assert (runner._kept, len(runner._idle)) == (0, 0)
        row = await asyncio.wait_for(runner.fetchrow("SELECT 7 AS v"), timeout=2)
        assert row["v"] == 7
        assert (runner._kept, len(runner._idle)) == (1, 1)


async def test_the_warm_up_leases_the_kept_connections_and_prepares_the_hot_statements(
    postgres_database,
):
    async with statement_runner(postgres_database, keep=3) as runner:
        await runner.warm_up(warm_up_statements())
        assert (runner._kept, len(runner._idle)) == (3, 3)
        # Every kept connection has every statement prepared (one at a time per connection).
        expected = {sql for sql, _ in warm_up_statements()}
        for connection in runner._idle:
            rows = await connection.fetch("SELECT statement FROM pg_prepared_statements")
            assert expected <= {row["statement"] for row in rows}
        # And their arguments match nothing: running them changed nothing.
        for sql, args in warm_up_statements():
            rows = await runner.fetch(sql, *args)
            assert [dict(row) for row in rows] in ([], [{"ids": []}]), sql


async def test_the_app_warms_up_at_start_and_the_warm_up_gives_up_without_a_database(
    postgres_database, caplog
):
    settings = make_settings(postgres_database, db_pool_size=2)
    async with running_app(settings) as application:
        await application.state.warm_up
        assert application.state.statements._kept == 2

    # Nothing listens on the port: the warm-up gives up at once, logs it, and is done.
    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0)
    runner = StatementRunner(dead, keep=2)
    logger = logging.getLogger("app")  # it does not propagate (JSON lines of its own)
    logger.addHandler(caplog.handler)
    try:
        await asyncio.wait_for(warm_up(runner), timeout=5)
    finally:
        logger.removeHandler(caplog.handler)
        await dead.close()
    assert runner._kept == 0
    assert "warming up the database connections failed" in caplog.text
