"""Expired holds go back to available without anyone asking: the app's sweeper and the
`python -m app sweep-holds` command."""

import asyncio
import os
import sys
from datetime import timedelta

from app.credits import service
from tests.apps import running_app
from tests.conftest import ROOT, make_settings
from tests.credits.ledger_helpers import balance, funded, hold


async def test_the_running_app_releases_expired_holds(database, sessionmaker):
    account_id = await funded(sessionmaker, 10)
    async with sessionmaker() as session, session.begin():
        due = await service.reserve(
            session, account_id, 4, ttl=timedelta(milliseconds=1), reference="crashed"
        )
        live = await service.reserve(session, account_id, 1, ttl=timedelta(hours=1), reference="ok")

    async with running_app(make_settings(database, hold_sweep_interval_seconds=0.05)):
        for _ in range(200):  # wait for the sweeper (up to 10 s), then judge the state
            if (await hold(sessionmaker, due.id)).status != "open":
                break
            await asyncio.sleep(0.05)

    assert (await hold(sessionmaker, due.id)).status == "expired"
    assert (await hold(sessionmaker, live.id)).status == "open"
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 1)


async def test_the_sweep_holds_command_releases_expired_holds(database, sessionmaker):
    account_id = await funded(sessionmaker, 10)
    async with sessionmaker() as session, session.begin():
        due = await service.reserve(
            session, account_id, 3, ttl=timedelta(milliseconds=1), reference="crashed"
        )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "sweep-holds",
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "released" in output.decode()
    assert (await hold(sessionmaker, due.id)).status == "expired"
    assert (await balance(sessionmaker, account_id)) == service.Balance(10, 0)
