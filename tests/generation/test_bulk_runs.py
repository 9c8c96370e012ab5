"""Bulk runs on PostgreSQL with two server processes and the stand-in Claude: cancel means
stop, fair share between accounts, resumable events on any instance, and a rate-limited
provider.

The servers share one database of this module's own and one stand-in (so what it received
can be checked), and each runs 4 workers."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.credits.models import CreditHold, LedgerEntry
from app.db import create_engine, create_sessionmaker
from app.generation.models import GenerationBatchItem
from tests.conftest import ADMIN
from tests.databases import create_database, drop_database
from tests.fakes.anthropic_server import FakeAnthropic
from tests.generation.conftest import assert_reconciles
from tests.servers import ServerProcess, start_server, stop_server

CONCURRENCY = 4
SERVER_ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "ANTHROPIC_TIMEOUT_SECONDS": "10",
    "ANTHROPIC_MAX_RETRIES": "2",
    "GENERATION_TIMEOUT_SECONDS": "30",
    "GENERATION_CONCURRENCY": str(CONCURRENCY),
    "BATCH_LEASE_SECONDS": "5",
    "BATCH_HEARTBEAT_INTERVAL_SECONDS": "1",
    "BATCH_POLL_INTERVAL_SECONDS": "0.2",
    "BATCH_EVENTS_INTERVAL_SECONDS": "0.1",
    "BATCH_HOLD_TTL_SECONDS": "60",
    "SSE_PING_INTERVAL_SECONDS": "1",
    "STARTER_CREDITS": "0",
    "DB_POOL_SIZE": "5",
}


@dataclass
class Cluster:
    url: str
    fake: FakeAnthropic
    servers: list[ServerProcess]
    sessionmaker: object

    @property
    def first(self) -> str:
        return self.servers[0].url

    @property
    def second(self) -> str:
        return self.servers[1].url


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@contextlib.asynccontextmanager
async def two_instances(
    stand_in: FakeAnthropic, directory: str, **env: str
) -> AsyncIterator[Cluster]:
    """A database of its own and two servers on it (`SERVER_ENV`, then `env`)."""
    url = await create_database("postgres", directory)
    environment = {**SERVER_ENV, "ANTHROPIC_BASE_URL": stand_in.url, **env}
    servers: list[ServerProcess] = []
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        for _ in range(2):
            servers.append(await asyncio.to_thread(start_server, url, **environment))
        yield Cluster(url, stand_in, servers, create_sessionmaker(engine))
    finally:
        for server in servers:
            await asyncio.to_thread(stop_server, server)
        await engine.dispose()
        await drop_database(url)


@pytest.fixture(scope="module")
async def cluster(stand_in, tmp_path_factory) -> AsyncIterator[Cluster]:
    async with two_instances(stand_in, str(tmp_path_factory.mktemp("bulk"))) as running:
        yield running


@dataclass
class Customer:
    account_id: str
    auth: dict[str, str]
    site_id: str


async def customer(base_url: str, credits: int) -> Customer:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        created = await client.post(
            "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@example.com"}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        account_id = created.json()["account"]["id"]
        auth = {"Authorization": f"Bearer {created.json()['api_key']['key']}"}
        site = await client.post(
            "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "S"}, headers=auth
        )
        funded = await client.post(
            f"/v1/admin/accounts/{account_id}/adjustments",
            json={"amount": credits, "reason": "test"},
            headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert funded.status_code == 201, funded.text
        return Customer(account_id, auth, site.json()["id"])


async def start_batch(client: httpx.AsyncClient, who: Customer, items: list[dict]) -> dict:
    response = await client.post(
        "/v1/generation-batches",
        json={"kind": "meta_title", "site_id": who.site_id, "items": items},
        headers=who.auth,
    )
    assert response.status_code == 202, response.text
    return response.json()


async def wait_for(client, who, batch_id, done, within=90.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        batch = (await client.get(f"/v1/generation-batches/{batch_id}", headers=who.auth)).json()
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.05)


async def ledger_of_batch(cluster: Cluster, batch_id: str) -> tuple[int, int]:
    """(consumption entries of the batch, sum of their amounts)."""
    async with cluster.sessionmaker() as session:  # type: ignore[operator]
        row = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                    LedgerEntry.batch_id == uuid.UUID(batch_id)
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def item_values(cluster: Cluster, batch_id: str, column: Any) -> set[Any]:
    """The values one column takes over the batch's items."""
    async with cluster.sessionmaker() as session:  # type: ignore[operator]
        rows = await session.scalars(
            select(column).where(GenerationBatchItem.batch_id == uuid.UUID(batch_id))
        )
        return set(rows.all())


async def open_holds(cluster: Cluster, account_id: str) -> int:
    async with cluster.sessionmaker() as session:  # type: ignore[operator]
        return int(
            await session.scalar(
                select(func.count())
                .select_from(CreditHold)
                .where(CreditHold.account_id == uuid.UUID(account_id), CreditHold.status == "open")
            )
            or 0
        )


# --- cancel means stop ---


@pytest.mark.parametrize("cancel_after", [2.0, 0.05])
async def test_once_cancel_answered_no_model_call_starts_on_any_instance(cluster, cancel_after):
    """60 items of 1.5 s on two instances; canceled 2 s in (8 calls in flight, 8 more
    claimed ahead in the workers' queues), or at once (while the claimers take the first
    items). Only the calls in flight at the cancel may be charged."""
    who = await customer(cluster.first, 100)
    tag = uuid.uuid4().hex
    items = [{"page_content": f"Page {i} {tag} fake:latency=1.5"} for i in range(60)]
    async with (
        httpx.AsyncClient(base_url=cluster.first, timeout=30) as first,
        httpx.AsyncClient(base_url=cluster.second, timeout=30) as second,
    ):
        batch = await start_batch(first, who, items)
        await asyncio.sleep(cancel_after)
        canceled = await second.post(
            f"/v1/generation-batches/{batch['id']}/cancel", headers=who.auth
        )
        answered_at = time.monotonic()
        assert canceled.status_code == 200, canceled.text
        at_cancel = canceled.json()
        assert at_cancel["status"] == "canceled"
        # Only generating items are left pending: calls in flight, or just answered and
        # not yet recorded.
        in_flight = at_cancel["pending"]
        assert at_cancel["canceled"] == 60 - at_cancel["succeeded"] - in_flight

        final = await wait_for(first, who, batch["id"], lambda b: b["pending"] == 0)
        balance = (await first.get("/v1/balance", headers=who.auth)).json()

    # No canceled item ever reached the stand-in; every item that did was generating
    # before the cancel committed (so it counted as in flight), and nothing of the batch
    # arrived well after the cancel answered (a call started just before the commit may
    # still be on its way to the stand-in when the answer arrives).
    by_index = {item["index"]: item["status"] for item in final["items"]}
    called = {i for i in range(60) if cluster.fake.calls_mentioning(f"Page {i} {tag} ")}
    assert called == {i for i, status in by_index.items() if status == "succeeded"}
    assert cluster.fake.calls_since(answered_at + 0.5, tag) == 0
    assert final["status"] == "canceled" and final["failed"] == 0
    assert final["succeeded"] <= at_cancel["succeeded"] + in_flight
    assert final["succeeded"] + final["canceled"] == 60
    assert [i["status"] for i in final["items"]].count("canceled") == final["canceled"]
    assert (balance["available"], balance["reserved"]) == (100 - final["succeeded"], 0)
    assert await ledger_of_batch(cluster, batch["id"]) == (
        final["succeeded"],
        -final["succeeded"],
    )
    assert await open_holds(cluster, who.account_id) == 0
    await assert_reconciles(cluster.sessionmaker)  # type: ignore[arg-type]


# --- fair share ---


async def test_a_small_batch_is_not_starved_by_another_accounts_big_one(cluster):
    big_account = await customer(cluster.first, 500)
    small_account = await customer(cluster.first, 10)
    big_items = [{"page_content": f"Big {i} fake:latency=0.5"} for i in range(400)]
    async with (
        httpx.AsyncClient(base_url=cluster.first, timeout=30) as first,
        httpx.AsyncClient(base_url=cluster.second, timeout=30) as second,
    ):
        big = await start_batch(first, big_account, big_items)
        await asyncio.sleep(1.0)
        started = time.monotonic()
        small = await start_batch(
            second,
            small_account,
            [{"page_content": f"Small {i} fake:latency=0.5"} for i in range(4)],
        )
        done = await wait_for(
            second, small_account, small["id"], lambda b: b["status"] == "completed"
        )
        took = time.monotonic() - started
        running = (
            await first.get(f"/v1/generation-batches/{big['id']}", headers=big_account.auth)
        ).json()
        await first.post(f"/v1/generation-batches/{big['id']}/cancel", headers=big_account.auth)
        await wait_for(first, big_account, big["id"], lambda b: b["pending"] == 0)
    assert done["succeeded"] == 4
    assert running["pending"] > 200, running  # the big batch was still running
    assert took < 2.0, took


# --- resumable events ---


def parse(text: str) -> list[dict]:
    """SSE blocks as dicts of their fields (comments dropped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


async def read_events(client, path, headers, *, stop_after_items=None) -> list[dict]:
    """Events of one connection, until `done` or `stop_after_items` item events."""
    events: list[dict] = []
    buffer = ""
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            buffer += chunk
            *blocks, buffer = buffer.replace("\r\n", "\n").split("\n\n")
            for block in blocks:
                events.extend(parse(block + "\n\n"))
            with_item = [e for e in events if e.get("data", {}).get("item")]
            if events and events[-1].get("event") == "done":
                return events
            if stop_after_items is not None and len(with_item) >= stop_after_items:
                return events
    return events


async def test_a_dropped_stream_resumes_on_the_other_instance_without_repeats(cluster):
    who = await customer(cluster.first, 20)
    items = [{"page_content": f"Page {i} fake:latency=0.3"} for i in range(16)]
    async with (
        httpx.AsyncClient(base_url=cluster.first, timeout=60) as first,
        httpx.AsyncClient(base_url=cluster.second, timeout=60) as second,
    ):
        batch = await start_batch(first, who, items)
        path = f"/v1/generation-batches/{batch['id']}/events"
        before = await read_events(
            first, path, {**who.auth, "Last-Event-ID": "0"}, stop_after_items=5
        )
        assert before[0]["retry"] == "3000"
        last_id = before[-1]["id"]
        after = await read_events(second, path, {**who.auth, "Last-Event-ID": last_id})

        # A bad or unknown id counts as none: the current state first, never an error.
        for bad in ("abc", "-1", "99999999999", "1e3", "٣".encode()):
            fresh = await read_events(second, path, {**who.auth, "Last-Event-ID": bad})
            assert fresh[0]["event"] == "progress" and fresh[0]["data"]["item"] is None, bad
            assert fresh[-1]["event"] == "done"
            assert fresh[0]["data"]["batch"]["succeeded"] == 16
    events = before + after
    assert all("id" in e for e in events)
    ids = [int(e["id"]) for e in events if e["data"]["item"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    indexes = [e["data"]["item"]["index"] for e in events if e["data"]["item"]]
    assert sorted(indexes) == list(range(16))  # every item once, across the two connections
    assert after[-1]["event"] == "done"
    assert after[-1]["data"]["batch"]["succeeded"] == 16
    counters = [e["data"]["batch"]["succeeded"] for e in events if e["data"]["item"]]
    assert counters == list(range(1, 17))


# --- a rate-limited provider ---


async def test_a_provider_capped_at_4_concurrent_calls_still_completes_every_item(cluster):
    """Two instances of 4 workers each (8 at once) against a stand-in that takes 4: the
    limiters back off on its 429s and its headers; every item succeeds, each charged
    once, with fewer refused calls than items."""
    cluster.fake.limit_concurrency(4)
    try:
        who = await customer(cluster.first, 60)
        items = [{"page_content": f"Page {i} fake:latency=0.3"} for i in range(48)]
        async with httpx.AsyncClient(base_url=cluster.first, timeout=30) as first:
            started = time.monotonic()
            batch = await start_batch(first, who, items)
            final = await wait_for(first, who, batch["id"], lambda b: b["status"] == "completed")
            took = time.monotonic() - started
            balance = (await first.get("/v1/balance", headers=who.auth)).json()
        rejected, peak = cluster.fake.rejected, cluster.fake.peak_in_flight
    finally:
        cluster.fake.limit_concurrency(None)
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 48, 0)
    assert peak <= 4
    assert 0 < rejected < 48, rejected
    print(f"48 items, 0.3 s calls, 4 at once: {took:.2f} s (ideal 3.6 s), {rejected} x 429")
    assert (balance["available"], balance["reserved"]) == (12, 0)
    assert await ledger_of_batch(cluster, batch["id"]) == (48, -48)
    # A refused call spent no attempt: every item succeeded on its one counted attempt.
    attempts = await item_values(cluster, batch["id"], GenerationBatchItem.attempts)
    assert attempts == {1}, attempts
    await assert_reconciles(cluster.sessionmaker)  # type: ignore[arg-type]
