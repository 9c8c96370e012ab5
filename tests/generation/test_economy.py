"""Economy batches: items go to the Message Batches API of the stand-in Claude, credits are
reserved at once, and results settle as standard items do."""

import asyncio
import uuid

from sqlalchemy import select

from app.generation.models import GenerationBatchItem, ProviderBatch
from tests.apps import customer
from tests.generation.conftest import assert_reconciles, balance_of, consumption_entries, open_holds
from tests.generation.test_batches import parse_events, wait_for


def finished(batch: dict) -> bool:
    return batch["status"] in ("completed", "canceled") and batch["pending"] == 0


async def economy_batch(client, who, kind: str, items: list[dict]) -> dict:
    created = await client.post(
        "/v1/generation-batches",
        json={"kind": kind, "site_id": who.site_id, "items": items, "priority": "economy"},
        headers=who.auth,
    )
    assert created.status_code == 202, created.text
    return created.json()


async def items_of(sessionmaker, batch_id: str) -> list[GenerationBatchItem]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(GenerationBatchItem)
            .where(GenerationBatchItem.batch_id == uuid.UUID(batch_id))
            .order_by(GenerationBatchItem.index)
        )
        return list(rows.scalars())


async def provider_batches(sessionmaker, batch_id: str) -> list[ProviderBatch]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(ProviderBatch).where(ProviderBatch.batch_id == uuid.UUID(batch_id))
        )
        return list(rows.scalars())


async def wait_for_provider_batch(sessionmaker, batch_id: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await provider_batches(sessionmaker, batch_id):
        assert asyncio.get_running_loop().time() < deadline, "never submitted"
        await asyncio.sleep(0.05)


async def wait_for_settled(sessionmaker, batch_id: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await provider_batches(sessionmaker, batch_id)
        if found and all(b.status == "settled" for b in found):
            return
        assert asyncio.get_running_loop().time() < deadline, [b.status for b in found]
        await asyncio.sleep(0.05)


async def test_an_economy_batch_goes_to_the_message_batches_api_and_charges_each_success(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 5)
    tag = uuid.uuid4().hex
    items = [{"page_content": f"Oak tables, page {i} {tag}", "language": "en"} for i in range(3)]
    created = await economy_batch(gen_client, who, "meta_description", items)
    assert created["priority"] == "economy"
    assert created["total"] == 3
    # All three credits are reserved at once.
    assert (await balance_of(gen_client, who))["reserved"] == 3

    batch = await wait_for(gen_client, who, created["id"], finished)
    assert batch["status"] == "completed"
    assert batch["priority"] == "economy"
    assert [item["status"] for item in batch["items"]] == ["succeeded"] * 3
    assert batch["credits_charged"] == 3
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (2, 0)
    assert sorted(e.amount for e in await consumption_entries(gen_sessionmaker, who.id)) == [
        -1,
        -1,
        -1,
    ]
    assert await open_holds(gen_sessionmaker, who.id) == []

    # The stand-in got one message batch with a request per item, shaped like a standard call,
    # and no standard Messages call for them.
    requests = fake_anthropic.batch_requests_mentioning(tag)
    assert len(requests) == 3
    stored = await items_of(gen_sessionmaker, created["id"])
    assert sorted(r["custom_id"] for r in requests) == sorted(f"item-{i.id}" for i in stored)
    for request in requests:
        params = request["params"]
        assert params["model"] == "claude-haiku-5-5"
        assert params["thinking"] == {"type": "disabled"}
        assert params["output_config"]["effort"] == "low"
    assert fake_anthropic.calls_mentioning(tag) == []
    [provider_batch] = await provider_batches(gen_sessionmaker, created["id"])
    assert provider_batch.status == "settled"
    assert {i.provider_batch_id for i in stored} == {provider_batch.id}
    # Usage is recorded per item, at economy priority, with the tokens the stand-in counted.
    counted = sorted(
        (u["input_tokens"], u["output_tokens"]) for u in fake_anthropic.usage_mentioning(tag)
    )
    assert sorted((i.input_tokens, i.output_tokens) for i in stored) == counted
    assert {(i.priority, i.model) for i in stored} == {("economy", "claude-haiku-5-5")}
    await assert_reconciles(gen_sessionmaker)


async def test_an_economy_batch_that_partly_fails_charges_only_what_succeeded(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 10)
    tag = uuid.uuid4().hex
    contents = [
        f"A fine page {tag}",  # succeeds
        f"An errored request fake:status=500 {tag}",  # errored -> released
        f"An expired request fake:expire {tag}",  # expired -> released
        f"Too long once fake:long-once={tag} {tag}",  # invalid, retried standard -> charged
        f"Too long always fake:long {tag}",  # invalid, retried standard, invalid -> released
    ]
    created = await economy_batch(
        gen_client, who, "meta_title", [{"page_content": c} for c in contents]
    )
    batch = await wait_for(gen_client, who, created["id"], finished)
    statuses = [item["status"] for item in batch["items"]]
    assert statuses == ["succeeded", "failed", "failed", "succeeded", "failed"]
    reasons = [(item["error"] or {}).get("reason") for item in batch["items"]]
    assert reasons == [None, "upstream_error", "expired", None, "output_too_long"]
    assert batch["credits_charged"] == 2
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (8, 0)
    assert len(await consumption_entries(gen_sessionmaker, who.id)) == 2
    # The two outputs that broke their rules were each retried once as a standard call.
    assert len(fake_anthropic.calls_mentioning(f"fake:long-once={tag}")) == 1
    assert len(fake_anthropic.calls_mentioning(f"Too long always fake:long {tag}")) == 1
    assert fake_anthropic.calls_mentioning(f"A fine page {tag}") == []
    await assert_reconciles(gen_sessionmaker)


async def test_canceling_an_economy_batch_cancels_it_at_anthropic_and_releases_every_credit(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 4)
    tag = uuid.uuid4().hex
    items = [{"page_content": f"Slow page {i} fake:batchdelay=60 {tag}"} for i in range(4)]
    created = await economy_batch(gen_client, who, "meta_title", items)
    await wait_for_provider_batch(gen_sessionmaker, created["id"])
    canceled = await gen_client.post(
        f"/v1/generation-batches/{created['id']}/cancel", headers=who.auth
    )
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["priority"] == "economy"
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (4, 0)

    batch = await wait_for(gen_client, who, created["id"], finished)
    assert [item["status"] for item in batch["items"]] == ["canceled"] * 4
    assert batch["credits_charged"] == 0
    # Anthropic's cancel was called, and the canceled results changed nothing.
    [provider_batch] = await provider_batches(gen_sessionmaker, created["id"])
    assert fake_anthropic.batches[provider_batch.id]["cancel_initiated_at"] is not None
    await wait_for_settled(gen_sessionmaker, created["id"])
    assert await consumption_entries(gen_sessionmaker, who.id) == []
    assert await open_holds(gen_sessionmaker, who.id) == []
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (4, 0)
    await assert_reconciles(gen_sessionmaker)


async def test_economy_batch_events_follow_its_items(gen_client, fake_anthropic):
    who = await customer(gen_client, 2)
    items = [{"page_content": f"Events page {i} {uuid.uuid4().hex}"} for i in range(2)]
    created = await economy_batch(gen_client, who, "meta_title", items)
    response = await gen_client.get(
        f"/v1/generation-batches/{created['id']}/events", headers=who.auth
    )
    assert response.status_code == 200
    events = parse_events(response.text)
    assert events[-1][0] == "done"
    assert events[-1][1]["batch"]["succeeded"] == 2
    assert events[-1][1]["batch"]["priority"] == "economy"
    finished_items = [data["item"]["index"] for event, data in events if data["item"]]
    assert sorted(finished_items) == [0, 1]


async def test_a_bad_priority_is_422_and_reserves_nothing(gen_client):
    who = await customer(gen_client, 3)
    response = await gen_client.post(
        "/v1/generation-batches",
        json={
            "kind": "meta_title",
            "site_id": who.site_id,
            "items": [{"page_content": "x"}],
            "priority": "urgent",
        },
        headers=who.auth,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["loc"][-1] == "priority"
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (3, 0)


async def test_an_economy_image_whose_variant_cannot_be_fetched_is_retried_with_the_original(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 2)
    tag = uuid.uuid4().hex
    fine = f"https://framerusercontent.com/images/{tag}/barn.jpg"
    broken = f"https://framerusercontent.com/images/{tag}/fake-novariant/barn.jpg"
    created = await economy_batch(
        gen_client, who, "alt_text", [{"image_url": fine}, {"image_url": broken}]
    )
    batch = await wait_for(gen_client, who, created["id"], finished)
    assert [item["status"] for item in batch["items"]] == ["succeeded", "succeeded"]
    sent = [r["params"]["messages"][0]["content"][0]["source"]["url"] for r in
            fake_anthropic.batch_requests_mentioning(tag)]  # fmt: skip
    assert sorted(sent) == sorted([fine + "?scale-down-to=512", broken + "?scale-down-to=512"])
    # The standard retry tried the variant (refused, free) and then the original.
    retried = [c["messages"][0]["content"][0]["source"]["url"] for c in
               fake_anthropic.calls_mentioning(tag)]  # fmt: skip
    assert retried == [broken + "?scale-down-to=512", broken]
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (0, 0)
    await assert_reconciles(gen_sessionmaker)
