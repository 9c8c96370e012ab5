"""The per-account generation bucket holds across worker processes and instances on
PostgreSQL: 150 concurrent generations of one account, spread over two instances with two
uvicorn workers each, against a burst of 60."""

import asyncio
import time

import httpx

from tests.apps import customer
from tests.conftest import make_settings
from tests.generation.conftest import assert_reconciles, consumption_entries, open_holds
from tests.servers import running_servers

BURST = 60
PER_MINUTE = 1


async def test_150_generations_over_two_instances_with_two_workers_each_get_the_burst(
    postgres_database,
):
    from app.db import create_engine, create_sessionmaker

    env = {
        "RATE_LIMIT_GENERATIONS_BURST": str(BURST),
        "RATE_LIMIT_GENERATIONS_PER_MINUTE": str(PER_MINUTE),
        "STARTER_CREDITS": "0",
        "DB_POOL_SIZE": "3",  # 4 processes x 4 x 3 connections at most
    }
    workers = ["--workers", "2"]
    servers_cm = running_servers(postgres_database.url, 2, uvicorn_args=workers, **env)
    servers = await asyncio.to_thread(servers_cm.__enter__)
    try:
        first, second = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
        async with first, second:
            who = await customer(first, 1_000, site_name="S")
            account_id, auth = who.id, who.auth
            body = {
                "kind": "meta_title",
                "site_id": who.site_id,
                "input": {"page_content": "Solid oak dining tables, made by hand in Vermont."},
            }
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    (first if n % 2 else second).post("/v1/generations", json=body, headers=auth)
                    for n in range(150)
                )
            )
            elapsed = time.monotonic() - started
            balance = (await first.get("/v1/balance", headers=auth)).json()
    finally:
        await asyncio.to_thread(servers_cm.__exit__, None, None, None)

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 429}, [
        r.text for r in responses if r.status_code not in (201, 429)
    ]
    # The burst, plus what the bucket refilled while the requests ran.
    allowed = BURST + int(elapsed * PER_MINUTE / 60)
    assert statuses.count(201) == allowed, (statuses.count(201), allowed)
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["code"] == "rate_limited" for r in refused)
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert (balance["available"], balance["reserved"]) == (1_000 - allowed, 0)

    engine = create_engine(make_settings(postgres_database))
    try:
        sessionmaker = create_sessionmaker(engine)
        assert len(await consumption_entries(sessionmaker, account_id)) == allowed
        assert await open_holds(sessionmaker, account_id) == []
        await assert_reconciles(sessionmaker)
    finally:
        await engine.dispose()
