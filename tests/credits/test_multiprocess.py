"""Two server processes on one PostgreSQL database take credits from one account at once."""

import asyncio
import contextlib
import uuid

import httpx

from app.credits import service
from app.db import create_engine, create_sessionmaker
from tests.apps import new_account
from tests.conftest import ADMIN, make_settings
from tests.servers import running_servers


async def test_100_requests_across_two_servers_take_exactly_the_10_credits_there_are(
    postgres_database,
):
    with contextlib.ExitStack() as stack:
        servers = await asyncio.to_thread(
            stack.enter_context, running_servers(postgres_database.url, 2, DB_POOL_SIZE="5")
        )
        first, second = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
        async with first, second:
            account = await new_account(first)
            account_id, key = account.id, account.key
            path = f"/v1/admin/accounts/{account_id}/adjustments"

            async def adjust(client, amount):
                return await client.post(
                    path,
                    json={"amount": amount, "reason": "race"},
                    headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
                )

            assert (await adjust(second, 10)).status_code == 201

            # Half of the requests to each process, interleaved.
            responses = await asyncio.gather(
                *(adjust(first if i % 2 else second, -1) for i in range(100))
            )

            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201] * 10 + [409] * 90, statuses
            refusals = [r.json() for r in responses if r.status_code == 409]
            assert {(p["code"], p["needed"], p["available"]) for p in refusals} == {
                ("insufficient_credits", 1, 0)
            }
            assert all(
                r.headers["content-type"] == "application/problem+json"
                for r in responses
                if r.status_code == 409
            )

            balance = (
                await first.get("/v1/balance", headers={"Authorization": f"Bearer {key}"})
            ).json()
            assert (balance["available"], balance["reserved"], balance["display"]) == (
                0,
                0,
                "0 Credits",
            )
            ledger = (
                await second.get(f"/v1/admin/accounts/{account_id}/ledger?limit=200", headers=ADMIN)
            ).json()["entries"]
    assert sorted(e["amount"] for e in ledger) == [-1] * 10 + [10]
    assert sorted(e["balance_after"] for e in ledger) == list(range(0, 11))

    engine = create_engine(make_settings(postgres_database))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            assert await service.find_mismatches(session) == []
    finally:
        await engine.dispose()
