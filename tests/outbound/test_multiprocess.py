"""Outbound events with real server processes on PostgreSQL: concurrent generations on two
instances crossing the threshold together, and `kill -9` of the dispatching instance."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from app.credits import service as credits
from app.db import create_engine, create_sessionmaker
from app.outbound.models import OutboundEvent
from tests.conftest import ADMIN, Database, make_settings
from tests.databases import create_database, drop_database
from tests.fakes.event_receiver import SECRET, FakeReceiver, event_types
from tests.outbound.conftest import FAST_RETRIES, eventually
from tests.servers import start_server, stop_server


@pytest.fixture
async def fresh_pg(tmp_path) -> AsyncIterator[Database]:
    url = await create_database("postgres", str(tmp_path))
    yield Database("postgres", url)
    await drop_database(url)


def server_env(receiver: FakeReceiver, **extra: str) -> dict[str, str]:
    return {
        "EVENTS_WEBHOOK_URL": receiver.url,
        "EVENTS_WEBHOOK_SECRET": SECRET,
        "EVENTS_RETRY_SCHEDULE_SECONDS": json.dumps(FAST_RETRIES),
        "EVENTS_DISPATCH_INTERVAL_SECONDS": "0.05",
        "EVENTS_TIMEOUT_SECONDS": "5",
        "EVENTS_CLAIM_SECONDS": "8",
        "STARTER_CREDITS": "0",
        "DB_POOL_SIZE": "3",
        "RATE_LIMIT_GENERATIONS_BURST": "10000",
        "RATE_LIMIT_GENERATIONS_PER_MINUTE": "100000",
        **extra,
    }


async def _account(client: httpx.AsyncClient, credits_: int) -> tuple[str, dict[str, str]]:
    created = await client.post(
        "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@example.com"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    account_id = created.json()["account"]["id"]
    auth = {"Authorization": f"Bearer {created.json()['api_key']['key']}"}
    if credits_:
        granted = await client.post(
            f"/v1/admin/accounts/{account_id}/adjustments",
            json={"amount": credits_, "reason": "test"},
            headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert granted.status_code == 201, granted.text
    return account_id, auth


async def _outbox(database: Database, account_id: str) -> list[OutboundEvent]:
    engine = create_engine(make_settings(database))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            assert await credits.find_mismatches(session) == []
            rows = await session.execute(
                select(OutboundEvent)
                .where(OutboundEvent.account_id == uuid.UUID(account_id))
                .order_by(OutboundEvent.created_at)
            )
            return list(rows.scalars())
    finally:
        await engine.dispose()


async def test_concurrent_generations_on_two_instances_cross_the_threshold_once(
    fresh_pg, receiver: FakeReceiver
):
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(2):
            server = await asyncio.to_thread(start_server, fresh_pg.url, **server_env(receiver))
            stack.callback(stop_server, server)
            servers.append(server)
        first, second = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
        async with first, second:
            account_id, auth = await _account(first, 60)
            site = await first.post(
                "/v1/sites", json={"framer_project_id": "p", "name": "S"}, headers=auth
            )
            body = {
                "kind": "meta_title",
                "site_id": site.json()["id"],
                "input": {"page_content": "Handmade ceramic mugs, glazed in small batches."},
            }
            responses = await asyncio.gather(
                *(
                    (first if i % 2 else second).post("/v1/generations", json=body, headers=auth)
                    for i in range(90)
                )
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201] * 60 + [402] * 30, statuses
            balance = (await second.get("/v1/balance", headers=auth)).json()
            assert (balance["available"], balance["reserved"]) == (0, 0)
            # The usage rollup counted every concurrent charge, whichever path wrote it.
            usage = (await first.get("/v1/usage?group_by=kind", headers=auth)).json()
            assert usage["buckets"] == [{"key": "meta_title", "credits": 60, "generations": 60}]

            await eventually(lambda: len(receiver.of_account(account_id)) >= 2)
            await asyncio.sleep(1.0)  # anything extra would have arrived by now
            got = receiver.of_account(account_id)
            assert event_types(got) == ["balance.low", "balance.depleted"]
            assert receiver.rejected == []
            low = got[0].body["data"]
            assert low["available"] == 49 and low["low_balance_threshold"] == 50
    events = await _outbox(fresh_pg, account_id)
    assert [(e.type, e.status) for e in events] == [
        ("balance.low", "delivered"),
        ("balance.depleted", "delivered"),
    ]


async def test_kill_9_of_the_dispatching_instance_loses_no_event(fresh_pg, receiver: FakeReceiver):
    receiver.mode = "hang"  # the instance is mid-send when it dies
    receiver.hang_seconds = 8.0
    env = server_env(receiver, EVENTS_TIMEOUT_SECONDS="5", EVENTS_CLAIM_SECONDS="6")
    dispatching = await asyncio.to_thread(start_server, fresh_pg.url, **env)
    try:
        async with httpx.AsyncClient(base_url=dispatching.url, timeout=60) as client:
            account_id, _ = await _account(client, 100)
            for amount in (-60, 60, -100):  # low, recovered, low + depleted
                adjusted = await client.post(
                    f"/v1/admin/accounts/{account_id}/adjustments",
                    json={"amount": amount, "reason": "test"},
                    headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
                )
                assert adjusted.status_code == 201
            await eventually(lambda: len(receiver.of_account(account_id)) == 4)
        dispatching.kill_hard()
    finally:
        stop_server(dispatching)
    in_flight = {r.webhook_id for r in receiver.of_account(account_id)}
    assert len(in_flight) == 4

    receiver.mode = "ok"
    other = await asyncio.to_thread(start_server, fresh_pg.url, **env)
    try:
        async with httpx.AsyncClient(base_url=other.url, timeout=60) as client:

            async def delivered():
                page = await client.get(
                    "/v1/admin/event-deliveries",
                    params={"account_id": account_id, "status": "delivered"},
                    headers=ADMIN,
                )
                found = page.json()["deliveries"]
                return found if len(found) == 4 else None

            found = await eventually(delivered, within=30)
    finally:
        stop_server(other)
    assert {d["webhook_id"] for d in found} == in_flight
    # The dead instance's attempts were never recorded (unless one timed out before the
    # kill, on a very slow machine); the survivor's delivered each.
    assert all(d["attempts"][-1]["status_code"] == 204 for d in found), found
    accepted = [r for r in receiver.of_account(account_id) if r.answered == 204]
    assert sorted(r.webhook_id for r in accepted) == sorted(in_flight)
    assert event_types(accepted) == [
        "balance.low",
        "balance.recovered",
        "balance.low",
        "balance.depleted",
    ]
    events = await _outbox(fresh_pg, account_id)
    assert len(events) == 4
    engine = create_engine(make_settings(fresh_pg))
    try:
        async with create_sessionmaker(engine)() as session:
            pending = await session.scalar(
                select(func.count()).where(OutboundEvent.status == "pending")
            )
        assert pending == 0
    finally:
        await engine.dispose()
