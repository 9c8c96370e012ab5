"""`python -m app reconcile` finds any account whose stored balance disagrees with its ledger."""

import asyncio
import os
import sys
import uuid
from datetime import timedelta

from sqlalchemy import Uuid, bindparam, text

from app.config import Settings
from app.credits import service
from app.db import create_engine, create_sessionmaker
from tests.conftest import ROOT, run_alembic
from tests.credits.ledger_helpers import funded, mismatches_for
from tests.databases import fresh_database


async def reconcile(database_url: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "reconcile",
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode, output.decode()


async def execute(sessionmaker, statement: str, **ids: uuid.UUID) -> None:
    """Raw SQL against one row, as someone poking the database by hand would."""
    query = text(statement).bindparams(*(bindparam(name, type_=Uuid) for name in ids))
    async with sessionmaker() as session, session.begin():
        result = await session.execute(query, ids)
        assert result.rowcount == 1


async def test_reconcile_command_names_a_corrupted_account_and_passes_once_fixed(
    database, sessionmaker
):
    account_id = await funded(sessionmaker, 10)
    bystander = await funded(sessionmaker, 5)
    async with sessionmaker() as session, session.begin():
        await service.reserve(session, bystander, 3, ttl=timedelta(minutes=5), reference="r")
    await execute(
        sessionmaker,
        "UPDATE credit_balance SET available = available + 1 WHERE account_id = :account",
        account=account_id,
    )
    try:
        code, output = await reconcile(database.url)
        assert code == 1, output
        assert str(account_id) in output
        assert "available=11 reserved=0 ledger_sum=10" in output
        assert str(bystander) not in output
    finally:
        await execute(
            sessionmaker,
            "UPDATE credit_balance SET available = available - 1 WHERE account_id = :account",
            account=account_id,
        )
    code, output = await reconcile(database.url)
    assert code == 0, output
    assert "every account balances" in output


async def test_reconcile_notices_reserved_that_no_open_hold_accounts_for(database, sessionmaker):
    account_id = await funded(sessionmaker, 10)
    async with sessionmaker() as session, session.begin():
        held = await service.reserve(
            session, account_id, 4, ttl=timedelta(minutes=5), reference="r"
        )
    assert await mismatches_for(sessionmaker, account_id) == []
    # A hold closed by hand, without returning its credits.
    await execute(
        sessionmaker, "UPDATE credit_hold SET status = 'released' WHERE id = :h", h=held.id
    )
    try:
        [found] = await mismatches_for(sessionmaker, account_id)
        assert (found.available, found.reserved, found.ledger_sum, found.open_holds_sum) == (
            6,
            4,
            10,
            0,
        )
    finally:
        await execute(
            sessionmaker, "UPDATE credit_hold SET status = 'open' WHERE id = :h", h=held.id
        )
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_reconcile_notices_an_account_without_a_balance_row(database, sessionmaker):
    account_id = await funded(sessionmaker, 10)
    await execute(sessionmaker, "DELETE FROM credit_balance WHERE account_id = :a", a=account_id)
    try:
        [found] = await mismatches_for(sessionmaker, account_id)
        assert (found.available, found.reserved, found.ledger_sum) == (None, None, 10)
        assert "no credit_balance row" in found.describe()
    finally:
        await execute(
            sessionmaker,
            "INSERT INTO credit_balance (account_id, available, reserved, updated_at) "
            "VALUES (:a, 10, 0, CURRENT_TIMESTAMP)",
            a=account_id,
        )
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_reconcile_notices_an_entry_whose_balance_after_is_wrong(database, tmp_path):
    # Entries cannot be removed again, so this corruption gets a database of its own.
    async with fresh_database(database.backend, tmp_path) as url:
        await run_alembic(url, ("upgrade", "head"))
        engine = create_engine(Settings(_env_file=None, database_url=url))
        sessionmaker = create_sessionmaker(engine)
        try:
            account_id = await funded(sessionmaker, 10)
            # The sums still agree (available moved with the entry); only the chain is wrong.
            await execute(
                sessionmaker,
                "INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, "
                "description, created_at) VALUES (:e, :a, 'adjustment', 5, 99, 'forged', "
                "CURRENT_TIMESTAMP)",
                e=uuid.uuid4(),
                a=account_id,
            )
            await execute(
                sessionmaker,
                "UPDATE credit_balance SET available = 15 WHERE account_id = :a",
                a=account_id,
            )
            [found] = await mismatches_for(sessionmaker, account_id)
            assert (found.available, found.ledger_sum, found.broken_entries) == (15, 15, 1)
        finally:
            await engine.dispose()
