"""`python -m app reconcile | sweep-holds`, run as cron jobs run them: exit 0 when done,
1 only for "does not balance", 2 with one clear line when the command cannot run at all,
and never a database file created as a side effect."""

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_alembic
from tests.credits.ledger_helpers import funded
from tests.databases import fresh_database
from tests.test_reconcile import execute


async def run_command(*args: str, database_url: str | None, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)  # the app, run from another directory
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["reconcile", "sweep-holds"])
async def test_from_another_directory_without_a_database_exits_2_and_creates_no_file(
    command, tmp_path
):
    # The default DATABASE_URL is ./rankframe.db: relative to where cron happens to run.
    code, out, err = await run_command(command, database_url=None, cwd=tmp_path)
    assert code == 2, (out, err)
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"{command}: no database at {tmp_path / 'rankframe.db'}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["reconcile", "sweep-holds"])
async def test_a_database_without_the_schema_exits_2_with_one_line(command, database, tmp_path):
    async with fresh_database(database.backend, tmp_path) as url:
        if database.backend == "sqlite":
            # An empty file, as `sqlite3 rankframe.db .quit` leaves it.
            await asyncio.to_thread(Path(url.removeprefix("sqlite+aiosqlite:///")).touch)
        code, out, err = await run_command(command, database_url=url, cwd=tmp_path)
    assert code == 2, (out, err)
    assert (
        err == f"{command}: the database has no schema (no alembic_version): run "
        "`alembic upgrade head` first\n"
    )


async def test_a_database_behind_the_code_exits_2(database, tmp_path):
    async with fresh_database(database.backend, tmp_path) as url:
        await run_alembic(url, ("upgrade", "0003"))
        code, _, err = await run_command("reconcile", database_url=url, cwd=tmp_path)
    assert code == 2, err
    assert "schema is at revision 0003" in err and "run `alembic upgrade head`" in err
    assert err.count("\n") == 1


async def test_an_unreachable_database_exits_2(tmp_path):
    url = f"postgresql+asyncpg://postgres@127.0.0.1:1/nothing_{uuid.uuid4().hex[:8]}"
    code, _, err = await run_command("reconcile", database_url=url, cwd=tmp_path)
    assert code == 2
    assert err.startswith("reconcile: cannot reach the database: ") and err.count("\n") == 1


async def test_reconcile_json_reports_each_account_that_does_not_balance(
    database, sessionmaker, tmp_path
):
    code, out, err = await run_command(
        "reconcile", "--json", database_url=database.url, cwd=tmp_path
    )
    assert (code, json.loads(out)) == (0, {"balanced": True, "mismatches": []}), err
    account_id = await funded(sessionmaker, 10)
    await execute(
        sessionmaker,
        "UPDATE credit_balance SET reserved = reserved + 2 WHERE account_id = :account",
        account=account_id,
    )
    try:
        code, out, err = await run_command(
            "reconcile", "--json", database_url=database.url, cwd=tmp_path
        )
    finally:
        await execute(
            sessionmaker,
            "UPDATE credit_balance SET reserved = reserved - 2 WHERE account_id = :account",
            account=account_id,
        )
    assert code == 1, err
    assert json.loads(out) == {
        "balanced": False,
        "mismatches": [
            {
                "account_id": str(account_id),
                "available": 10,
                "reserved": 2,
                "ledger_sum": 10,
                "open_holds_sum": 0,
                "broken_entries": 0,
            }
        ],
    }


async def test_sweep_holds_on_a_migrated_database_exits_0(database, tmp_path):
    code, out, err = await run_command("sweep-holds", database_url=database.url, cwd=tmp_path)
    assert code == 0, err
    assert "sweep-holds: released" in out
