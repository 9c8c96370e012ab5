"""Instances wake each other (PostgreSQL `NOTIFY`): a batch created on one instance is
claimed at once by the others' workers, and a batch's events reach a stream on another
instance as they are committed, not at the next poll.

Two server processes whose polls are 30 s apart: without the notifications the second one
would neither claim the batch nor see the other's results within the test's limits."""

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.generation.models import GenerationBatchItem
from tests.fakes.anthropic_server import FakeAnthropic
from tests.generation.test_bulk_runs import (
    Cluster,
    customer,
    item_values,
    read_events,
    start_batch,
    two_instances,
)

SLOW_POLLS = {"BATCH_POLL_INTERVAL_SECONDS": "30", "BATCH_EVENTS_INTERVAL_SECONDS": "30"}


@pytest.fixture
async def slow_polling(tmp_path) -> AsyncIterator[Cluster]:
    fake = FakeAnthropic().start()
    try:
        async with two_instances(fake, str(tmp_path), **SLOW_POLLS) as cluster:
            # Past the claimers' first look at an empty queue: from now on only a nudge (or
            # the 30 s poll) makes them look again.
            await asyncio.sleep(0.5)
            yield cluster
    finally:
        fake.stop()


async def test_a_batch_created_on_one_instance_is_worked_and_streamed_by_the_other(
    slow_polling,
):
    cluster = slow_polling
    who = await customer(cluster.first, 20)
    items = [{"page_content": f"Page {i} fake:latency=0.4"} for i in range(16)]
    async with (
        httpx.AsyncClient(base_url=cluster.first, timeout=60) as first,
        httpx.AsyncClient(base_url=cluster.second, timeout=60) as second,
    ):
        started = time.monotonic()
        batch = await start_batch(first, who, items)
        path = f"/v1/generation-batches/{batch['id']}/events"
        events = await asyncio.wait_for(
            read_events(second, path, {**who.auth, "Last-Event-ID": "0"}), timeout=20
        )
        elapsed = time.monotonic() - started

    assert events[-1]["event"] == "done"
    assert events[-1]["data"]["batch"]["succeeded"] == 16
    indexes = sorted(e["data"]["item"]["index"] for e in events if e["data"]["item"])
    assert indexes == list(range(16))
    # 16 calls of 0.4 s, 4 at a time per instance: about 0.8 s on both, 1.6 s on one; far
    # below the 30 s poll either way.
    assert elapsed < 15, elapsed

    workers = await item_values(cluster, batch["id"], GenerationBatchItem.claimed_by)
    pids = {name.split(":")[1] for name in workers if name}
    # Both instances' workers took items: the second heard of the batch when it was created.
    assert pids == {str(server.process.pid) for server in cluster.servers}, workers
