"""An economy batch survives `kill -9` of the instance that submitted it: the Anthropic
message batch id is in the database, so the other instances keep its holds alive (the
message batch runs twice the holds' TTL, with the sweeper running) and poll and settle it,
exactly once between them.

PostgreSQL only (several server processes); on a database of its own."""

import asyncio
import uuid

import httpx
from sqlalchemy import select

from app.config import Settings
from app.db import create_engine, create_sessionmaker
from app.generation.models import GenerationBatchItem, ProviderBatch
from tests.conftest import ADMIN
from tests.databases import create_database, drop_database
from tests.generation.conftest import assert_reconciles
from tests.servers import ServerProcess, start_server, stop_server

SERVER_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "ANTHROPIC_TIMEOUT_SECONDS": "3",
    "GENERATION_TIMEOUT_SECONDS": "4",
    "HOLD_TTL_SECONDS": "6",
    "HOLD_SWEEP_INTERVAL_SECONDS": "1",
    "BATCH_LEASE_SECONDS": "3",
    "BATCH_HEARTBEAT_INTERVAL_SECONDS": "1",
    "BATCH_POLL_INTERVAL_SECONDS": "0.2",
    "BATCH_HOLD_TTL_SECONDS": "6",
    "ECONOMY_POLL_INTERVAL_SECONDS": "0.3",
    "STARTER_CREDITS": "0",
    "DB_POOL_SIZE": "3",
}
BATCH_SECONDS = 12
"""Longer than the holds' TTL: only the survivors' keep-alive saves them."""


async def test_an_economy_batch_survives_kill_9_of_the_instance_that_submitted_it(
    fake_anthropic, tmp_path
):
    url = await create_database("postgres", str(tmp_path))
    env = {**SERVER_ENV, "ANTHROPIC_BASE_URL": fake_anthropic.url}
    servers: list[ServerProcess] = []
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    sessionmaker = create_sessionmaker(engine)
    tag = uuid.uuid4().hex
    try:
        # Three instances: whichever submits the message batch is killed; the other two keep
        # its holds alive and poll it.
        for _ in range(3):  # one after the other: three at once can take 30 s on 2 cores
            servers.append(await asyncio.to_thread(start_server, url, **env))
        async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as client:
            created = (
                await client.post(
                    "/v1/admin/accounts", json={"email": f"{tag}@example.com"}, headers=ADMIN
                )
            ).json()
            account_id = created["account"]["id"]
            auth = {"Authorization": f"Bearer {created['api_key']['key']}"}
            site = await client.post(
                "/v1/sites", json={"framer_project_id": tag, "name": "S"}, headers=auth
            )
            funded = await client.post(
                f"/v1/admin/accounts/{account_id}/adjustments",
                json={"amount": 20, "reason": "test"},
                headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert funded.status_code == 201
            items = [
                {
                    "page_content": f"Page {i} {tag}"
                    + (f" fake:batchdelay={BATCH_SECONDS}" * (i == 0))
                }
                for i in range(6)
            ]
            items.append({"page_content": f"Broken {tag} fake:status=500"})
            batch = await client.post(
                "/v1/generation-batches",
                json={
                    "kind": "meta_title",
                    "site_id": site.json()["id"],
                    "items": items,
                    "priority": "economy",
                },
                headers=auth,
            )
            assert batch.status_code == 202, batch.text
            batch_id = batch.json()["id"]
            assert (await client.get("/v1/balance", headers=auth)).json()["reserved"] == 7

        # Wait for the submission to be recorded, then kill the submitter.
        async with asyncio.timeout(30):
            while True:
                async with sessionmaker() as session:
                    submitter = await session.scalar(
                        select(GenerationBatchItem.claimed_by).where(
                            GenerationBatchItem.batch_id == uuid.UUID(batch_id),
                            GenerationBatchItem.provider_batch_id.is_not(None),
                        )
                    )
                if submitter:
                    break
                await asyncio.sleep(0.05)
        [killed] = [s for s in servers if f":{s.process.pid}:" in submitter]
        killed.kill_hard()
        servers.remove(killed)

        async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as client:
            async with asyncio.timeout(BATCH_SECONDS + 30):
                while True:
                    state = (
                        await client.get(f"/v1/generation-batches/{batch_id}", headers=auth)
                    ).json()
                    if state["status"] == "completed":
                        break
                    await asyncio.sleep(0.1)
            assert [item["status"] for item in state["items"]] == ["succeeded"] * 6 + ["failed"], [
                i.get("error") for i in state["items"]
            ]
            assert state["credits_charged"] == 6
            balance = (await client.get("/v1/balance", headers=auth)).json()
            assert (balance["available"], balance["reserved"]) == (14, 0)
            ledger = (await client.get("/v1/ledger?limit=200", headers=auth)).json()["entries"]
            assert sorted(e["amount"] for e in ledger if e["type"] == "consumption") == [-1] * 6

        # One message batch at Anthropic (not submitted again), settled once.
        assert len([b for b in fake_anthropic.batches.values() if tag in str(b["requests"])]) == 1
        async with sessionmaker() as session:
            [provider_batch] = (
                await session.execute(
                    select(ProviderBatch).where(ProviderBatch.batch_id == uuid.UUID(batch_id))
                )
            ).scalars()
        assert provider_batch.status == "settled"
        await assert_reconciles(sessionmaker)
    finally:
        for server in servers:
            await asyncio.to_thread(stop_server, server)
        await engine.dispose()
        await drop_database(url)
