"""A server killed with `kill -9` mid-batch loses no credit: the next instance finishes the
batch, and a single generation that was in flight is failed uncharged.

PostgreSQL only (several server processes, `SKIP LOCKED`); on a database of its own so no
other test's app works the batch."""

import asyncio
import os
import sys
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.credits.models import CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker
from app.generation.models import Generation, GenerationBatchItem
from tests.apps import app_client, asgi_client, customer, running_app
from tests.conftest import ADMIN, BACKENDS, ROOT, Database, make_settings
from tests.databases import create_database, drop_database
from tests.generation.conftest import FAST, assert_reconciles
from tests.servers import ServerProcess, start_server, stop_server

SERVER_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "ANTHROPIC_TIMEOUT_SECONDS": "3",
    "GENERATION_TIMEOUT_SECONDS": "4",
    "HOLD_TTL_SECONDS": "6",
    "HOLD_SWEEP_INTERVAL_SECONDS": "3600",
    "GENERATION_CONCURRENCY": "4",
    "BATCH_LEASE_SECONDS": "3",
    "BATCH_HEARTBEAT_INTERVAL_SECONDS": "1",
    "BATCH_POLL_INTERVAL_SECONDS": "0.2",
    "BATCH_HOLD_TTL_SECONDS": "30",
    "STARTER_CREDITS": "0",
}


async def run_cli(database_url: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_a_batch_survives_kill_9_of_the_server_running_it(fake_anthropic, tmp_path):
    url = await create_database("postgres", str(tmp_path))
    env = {**SERVER_ENV, "ANTHROPIC_BASE_URL": fake_anthropic.url}
    servers: list[ServerProcess] = []
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    sessionmaker = create_sessionmaker(engine)
    try:
        first = await asyncio.to_thread(start_server, url, **env)
        servers.append(first)
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            created = (
                await client.post(
                    "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@example.com"},
                    headers=ADMIN,
                )
            ).json()  # fmt: skip
            account_id = created["account"]["id"]
            auth = {"Authorization": f"Bearer {created['api_key']['key']}"}
            site = await client.post(
                "/v1/sites", json={"framer_project_id": "p", "name": "S"}, headers=auth
            )
            site_id = site.json()["id"]
            funded = await client.post(
                f"/v1/admin/accounts/{account_id}/adjustments",
                json={"amount": 100, "reason": "test"},
                headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert funded.status_code == 201
            items = [{"page_content": f"Page {i} fake:latency=0.4"} for i in range(40)]
            batch = await client.post(
                "/v1/generation-batches",
                json={"kind": "meta_title", "site_id": site_id, "items": items},
                headers=auth,
            )
            assert batch.status_code == 202
            batch_id = batch.json()["id"]
            single_key = uuid.uuid4().hex
            single_body = {
                "kind": "meta_title",
                "site_id": site_id,
                "input": {"page_content": "A page being generated fake:latency=2.5"},
            }
            single = asyncio.create_task(
                client.post(
                    "/v1/generations",
                    json=single_body,
                    headers={**auth, "Idempotency-Key": single_key},
                )
            )
            async with asyncio.timeout(60):
                while True:
                    progress = (
                        await client.get(f"/v1/generation-batches/{batch_id}", headers=auth)
                    ).json()
                    async with sessionmaker() as session:
                        generating = await session.scalar(
                            select(func.count())
                            .select_from(Generation)
                            .where(
                                Generation.account_id == uuid.UUID(account_id),
                                Generation.status == "running",
                            )
                        )
                    if progress["succeeded"] >= 8 and generating == 1:
                        break
                    await asyncio.sleep(0.05)

            first.kill_hard()  # mid-batch, mid-generation
            assert isinstance((await asyncio.gather(single, return_exceptions=True))[0], Exception)

        async with sessionmaker() as session:
            statuses = dict(
                (
                    await session.execute(
                        select(GenerationBatchItem.status, func.count())
                        .where(GenerationBatchItem.batch_id == uuid.UUID(batch_id))
                        .group_by(GenerationBatchItem.status)
                    )
                ).all()
            )
        # Left mid-flight: some generating (calls in flight), maybe some claimed ahead.
        assert statuses.get("generating", 0) > 0 and statuses["succeeded"] < 40, statuses

        second = await asyncio.to_thread(start_server, url, **env)
        servers.append(second)
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            async with asyncio.timeout(60):
                while True:
                    final = (
                        await client.get(f"/v1/generation-batches/{batch_id}", headers=auth)
                    ).json()
                    if final["status"] == "completed":
                        break
                    await asyncio.sleep(0.2)
            assert (final["succeeded"], final["failed"], final["pending"]) == (40, 0, 0)

            # The single generation's hold runs out; the sweep (the command, or the second
            # instance's sweeper if it started after that) fails it, uncharged.
            await asyncio.sleep(6.5)
            code, output = await run_cli(url, "sweep-holds")
            assert code == 0 and "interrupted generation(s), uncharged" in output, output
            replay = await client.post(
                "/v1/generations",
                json=single_body,
                headers={**auth, "Idempotency-Key": single_key},
            )
            assert replay.status_code == 502
            assert replay.json()["reason"] == "interrupted"
            assert replay.json()["credits_charged"] == 0

            balance = (await client.get("/v1/balance", headers=auth)).json()
            assert (balance["available"], balance["reserved"]) == (60, 0)

        async with sessionmaker() as session:
            charged = await session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.batch_id == uuid.UUID(batch_id))
            )
            still_open = await session.scalar(
                select(func.count())
                .select_from(CreditHold)
                .where(CreditHold.account_id == uuid.UUID(account_id), CreditHold.status == "open")
            )
        assert (charged, still_open) == (40, 0)
        code, output = await run_cli(url, "reconcile")
        assert code == 0, output
    finally:
        for server in servers:
            await asyncio.to_thread(stop_server, server)
        await engine.dispose()
        await drop_database(url)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_graceful_shutdown_hands_unfinished_items_back_at_once(
    backend, fake_anthropic, tmp_path
):
    url = await create_database(backend, str(tmp_path))
    settings = make_settings(
        Database(backend, url),
        anthropic_base_url=fake_anthropic.url,
        generation_concurrency=4,
        **{**FAST, "batch_lease_seconds": 600.0, "batch_hold_ttl_seconds": 1200},
    )
    try:
        async with app_client(settings, base_url="http://t") as client:
            who = await customer(client, 30)
            items = [{"page_content": f"Page {i} fake:latency=0.3"} for i in range(20)]
            batch = await client.post(
                "/v1/generation-batches",
                json={"kind": "meta_title", "site_id": who.site_id, "items": items},
                headers=who.auth,
            )
            batch_id = batch.json()["id"]
            async with asyncio.timeout(30):
                while True:
                    progress = await client.get(
                        f"/v1/generation-batches/{batch_id}", headers=who.auth
                    )
                    if progress.json()["succeeded"] >= 4:
                        break
                    await asyncio.sleep(0.05)
        # Stopped mid-batch: nothing is left claimed or generating under a lease of a stopped
        # process.
        engine = create_engine(settings)
        async with create_sessionmaker(engine)() as session:
            statuses = dict(
                (
                    await session.execute(
                        select(GenerationBatchItem.status, func.count())
                        .where(GenerationBatchItem.batch_id == uuid.UUID(batch_id))
                        .group_by(GenerationBatchItem.status)
                    )
                ).all()
            )
        await engine.dispose()
        assert not {"claimed", "generating"} & set(statuses), statuses
        assert statuses["queued"] > 0, statuses

        async with (
            running_app(settings) as second,
            asgi_client(second, base_url="http://t") as client,
        ):
            async with asyncio.timeout(60):
                while True:
                    final = (
                        await client.get(f"/v1/generation-batches/{batch_id}", headers=who.auth)
                    ).json()
                    if final["status"] == "completed":
                        break
                    await asyncio.sleep(0.1)
                balance = (await client.get("/v1/balance", headers=who.auth)).json()
        assert final["succeeded"] == 20
        assert (balance["available"], balance["reserved"]) == (10, 0)
        engine = create_engine(settings)
        await assert_reconciles(create_sessionmaker(engine))
        await engine.dispose()
    finally:
        await drop_database(url)
