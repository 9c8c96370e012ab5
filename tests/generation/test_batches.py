"""Generation batches: reserve all, charge what succeeded, release the rest."""

import asyncio
import json
import uuid

from sqlalchemy import update

from app.generation.models import GenerationBatch
from tests.apps import customer
from tests.generation.conftest import assert_reconciles, balance_of, consumption_entries, open_holds


def parse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def wait_for(client, who, batch_id: str, done, within: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        batch = (await client.get(f"/v1/generation-batches/{batch_id}", headers=who.auth)).json()
        if done(batch):
            return batch
        assert asyncio.get_running_loop().time() < deadline, batch
        await asyncio.sleep(0.05)


def alt_items(count: int, failing: set[int], marker: str = "") -> list[dict]:
    tag = uuid.uuid4().hex
    return [
        {
            "image_url": f"https://images.example.com/{tag}/"
            + ("fake-status-500/" if index in failing else "")
            + f"barn-{index}.jpg",
            "context": f"Gallery {marker}",
        }
        for index in range(count)
    ]


async def test_a_batch_of_72_alt_texts_with_5_failures_charges_67_and_releases_5(
    gen_client, gen_sessionmaker
):
    who = await customer(gen_client, 100)
    failing = {3, 17, 40, 41, 71}
    created = await gen_client.post(
        "/v1/generation-batches",
        json={
            "kind": "alt_text",
            "site_id": who.site_id,
            "items": alt_items(72, failing, marker="fake:latency=0.02"),
        },
        headers=who.auth,
    )
    assert created.status_code == 202, created.text
    batch = created.json()
    assert (batch["total"], batch["pending"], batch["status"]) == (72, 72, "queued")

    stream = await gen_client.get(f"/v1/generation-batches/{batch['id']}/events", headers=who.auth)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_events(stream.text)
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "done"
    assert names.count("done") == 1
    first = events[0][1]["batch"]
    already = first["succeeded"] + first["failed"]  # finished before the stream connected
    finished = [data for name, data in events if name == "progress" and data["item"]]
    assert already + len(finished) == 72 and len(finished) > 0
    assert len({e["item"]["index"] for e in finished}) == len(finished)
    # in order: every event reports one more finished item than the one before
    done_counts = [e["batch"]["succeeded"] + e["batch"]["failed"] for e in finished]
    assert done_counts == list(range(already + 1, 73))
    for event in finished:
        item = event["item"]
        if item["index"] in failing:
            assert item["status"] == "failed" and item["error"]["code"] == "generation_failed"
        else:
            assert item["status"] == "succeeded" and len(item["output"]["text"]) <= 125
    final = events[-1][1]["batch"]
    assert (final["status"], final["succeeded"], final["failed"], final["pending"]) == (
        "completed",
        67,
        5,
        0,
    )
    assert final["credits_charged"] == 67

    detail = (
        await gen_client.get(f"/v1/generation-batches/{batch['id']}", headers=who.auth)
    ).json()
    assert [i["index"] for i in detail["items"] if i["status"] == "failed"] == sorted(failing)
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (33, 0)
    entries = await consumption_entries(gen_sessionmaker, who.id)
    assert len(entries) == 67
    assert {str(e.batch_id) for e in entries} == {batch["id"]}
    assert await open_holds(gen_sessionmaker, who.id) == []
    await assert_reconciles(gen_sessionmaker)


async def test_cancel_midway_releases_every_item_not_generated(gen_client, gen_sessionmaker):
    who = await customer(gen_client, 50)
    items = alt_items(40, set(), marker="fake:latency=0.3")
    created = await gen_client.post(
        "/v1/generation-batches",
        json={"kind": "alt_text", "site_id": who.site_id, "items": items},
        headers=who.auth,
    )
    batch_id = created.json()["id"]
    await wait_for(gen_client, who, batch_id, lambda b: b["succeeded"] >= 3)
    canceled = await gen_client.post(f"/v1/generation-batches/{batch_id}/cancel", headers=who.auth)
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["canceled"] > 0

    final = await wait_for(gen_client, who, batch_id, lambda b: b["pending"] == 0)
    assert final["status"] == "canceled"
    assert final["failed"] == 0 and final["canceled"] > 0
    assert final["succeeded"] + final["canceled"] == 40
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (50 - final["succeeded"], 0)
    assert len(await consumption_entries(gen_sessionmaker, who.id)) == final["succeeded"]
    assert await open_holds(gen_sessionmaker, who.id) == []

    # a client connecting now gets the state first and `done` at once
    stream = await gen_client.get(f"/v1/generation-batches/{batch_id}/events", headers=who.auth)
    events = parse_events(stream.text)
    assert [name for name, _ in events] == ["progress", "done"]
    assert events[0][1]["batch"]["canceled"] == final["canceled"]

    again = await gen_client.post(f"/v1/generation-batches/{batch_id}/cancel", headers=who.auth)
    assert again.json()["succeeded"] == final["succeeded"]
    await assert_reconciles(gen_sessionmaker)


async def test_a_batch_larger_than_the_balance_reserves_nothing(gen_client, gen_sessionmaker):
    who = await customer(gen_client, 3)
    response = await gen_client.post(
        "/v1/generation-batches",
        json={"kind": "alt_text", "site_id": who.site_id, "items": alt_items(4, set())},
        headers=who.auth,
    )
    assert response.status_code == 402
    assert (response.json()["needed"], response.json()["available"]) == (4, 3)
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (3, 0)
    assert await open_holds(gen_sessionmaker, who.id) == []


async def test_batches_hold_1_to_1000_items(gen_client):
    who = await customer(gen_client, 2000)
    page = {"page_content": "A page."}
    for items in ([], [page] * 1001):
        response = await gen_client.post(
            "/v1/generation-batches",
            json={"kind": "meta_title", "site_id": who.site_id, "items": items},
            headers=who.auth,
        )
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
    assert (await balance_of(gen_client, who))["reserved"] == 0


async def test_a_repeated_batch_request_reserves_once(gen_client):
    who = await customer(gen_client, 10)
    headers = {**who.auth, "Idempotency-Key": uuid.uuid4().hex}
    body = {"kind": "meta_title", "site_id": who.site_id, "items": [{"page_content": "Hi."}] * 4}
    first, second = await asyncio.gather(
        gen_client.post("/v1/generation-batches", json=body, headers=headers),
        gen_client.post("/v1/generation-batches", json=body, headers=headers),
    )
    assert {first.status_code, second.status_code} <= {202, 409}
    assert 202 in (first.status_code, second.status_code)
    replay = await gen_client.post("/v1/generation-batches", json=body, headers=headers)
    assert replay.status_code == 202
    assert replay.headers["Idempotency-Replayed"] == "true"
    ids = {r.json()["id"] for r in (first, second, replay) if r.status_code == 202}
    assert len(ids) == 1
    await wait_for(gen_client, who, ids.pop(), lambda b: b["pending"] == 0)
    assert (await balance_of(gen_client, who))["available"] == 6


async def test_another_accounts_batch_is_not_found(gen_client):
    owner = await customer(gen_client, 1)
    stranger = await customer(gen_client, 1)
    created = await gen_client.post(
        "/v1/generation-batches",
        json={"kind": "meta_title", "site_id": owner.site_id, "items": [{"page_content": "A."}]},
        headers=owner.auth,
    )
    batch_id = created.json()["id"]
    for method, path in (
        ("GET", f"/v1/generation-batches/{batch_id}"),
        ("GET", f"/v1/generation-batches/{batch_id}/events"),
        ("POST", f"/v1/generation-batches/{batch_id}/cancel"),
    ):
        response = await gen_client.request(method, path, headers=stranger.auth)
        assert response.status_code == 404, (path, response.text)


async def test_a_batch_whose_last_item_was_recorded_by_a_dead_instance_still_completes(
    gen_client, gen_sessionmaker
):
    who = await customer(gen_client, 2)
    created = await gen_client.post(
        "/v1/generation-batches",
        json={"kind": "meta_title", "site_id": who.site_id, "items": [{"page_content": "A."}]},
        headers=who.auth,
    )
    batch_id = created.json()["id"]
    await wait_for(gen_client, who, batch_id, lambda b: b["status"] == "completed")
    # As if the instance that recorded the last item died before marking the batch done:
    async with gen_sessionmaker() as session, session.begin():
        await session.execute(
            update(GenerationBatch)
            .where(GenerationBatch.id == uuid.UUID(batch_id))
            .values(status="running", completed_at=None)
        )
    final = await wait_for(gen_client, who, batch_id, lambda b: b["status"] == "completed")
    assert final["completed_at"] is not None and final["succeeded"] == 1


async def test_streams_of_one_batch_share_one_poll_per_interval(gen_app, gen_client):
    """Ten clients follow one batch: the database is read by one feed, not ten streams."""
    feeds = gen_app.state.generation.feeds
    interval = gen_app.state.generation.settings.batch_events_interval_seconds
    who = await customer(gen_client, 10)
    created = await gen_client.post(
        "/v1/generation-batches",
        json={
            "kind": "meta_title",
            "site_id": who.site_id,
            "items": [{"page_content": f"Page {i} fake:latency=0.5"} for i in range(6)],
        },
        headers=who.auth,
    )
    path = f"/v1/generation-batches/{created.json()['id']}/events"
    before, started = feeds.polls, asyncio.get_running_loop().time()
    streams = await asyncio.gather(*(gen_client.get(path, headers=who.auth) for _ in range(10)))
    elapsed = asyncio.get_running_loop().time() - started
    polls = feeds.polls - before
    for stream in streams:
        names = [name for name, _ in parse_events(stream.text)]
        assert names[-1] == "done"
    # One feed: a read per interval, plus one per recorded group of items, plus slack.
    assert polls <= elapsed / interval + 6 + 5, (polls, elapsed)
