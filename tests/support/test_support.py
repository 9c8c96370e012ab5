"""Support finds a generation (single or batch item), reads it with its ledger entries and
credits it back at most once."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from tests.apps import ADMIN, Customer, customer

CONTENT = {"page_content": "Handmade ceramic mugs, glazed in small batches in Lisbon."}


async def funded_site(client, credits_: int) -> tuple[Customer, str, int]:
    """A funded account with its first site, and its balance then (with the starter credits
    the site granted)."""
    who = await customer(client, credits_, site_name="S")
    return who, who.site_id, await balance(client, who)


async def generate(client, account: Customer, site_id: str):
    """One meta title of `CONTENT`, charged 1 credit when it succeeds."""
    return await client.post(
        "/v1/generations",
        json={"kind": "meta_title", "site_id": site_id, "input": CONTENT},
        headers=account.auth,
    )


async def balance(client, account: Customer) -> int:
    return (await client.get("/v1/balance", headers=account.auth)).json()["available"]


async def listed(client, **params) -> dict:
    response = await client.get("/v1/admin/generations", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_single_generation_found_read_and_credited_back_once(client):
    account, site_id, start = await funded_site(client, 10)
    made = await generate(client, account, site_id)
    assert made.status_code == 201
    generation_id = made.json()["id"]
    page = await listed(client, account_id=str(account.id))
    (found,) = page["generations"]
    assert found["id"] == generation_id and found["batch_id"] is None
    assert (found["status"], found["credits_charged"], found["kind"]) == (
        "succeeded",
        1,
        "meta_title",
    )
    assert found["model"] == "offline-extractive-1" and found["latency_ms"] is not None
    assert found["account_id"] == str(account.id) and found["site_id"] == site_id

    detail = (await client.get(f"/v1/admin/generations/{generation_id}", headers=ADMIN)).json()
    assert [(e["type"], e["amount"]) for e in detail["ledger_entries"]] == [("consumption", -1)]
    assert detail["credited_back"] is False
    assert await balance(client, account) == start - 1

    back = await client.post(
        f"/v1/admin/generations/{generation_id}/credit-back",
        json={"reason": "Ticket 4182: cut off"},
        headers=ADMIN,
    )
    assert back.status_code == 201, back.text
    entry = back.json()
    assert (entry["type"], entry["amount"], entry["generation_id"]) == (
        "adjustment",
        1,
        generation_id,
    )
    assert entry["balance_after"] == start
    assert "Ticket 4182" in entry["description"]
    assert await balance(client, account) == start

    again = await client.post(
        f"/v1/admin/generations/{generation_id}/credit-back", json={"reason": "x"}, headers=ADMIN
    )
    assert again.status_code == 409 and again.json()["code"] == "already_credited_back"
    assert await balance(client, account) == start
    detail = (await client.get(f"/v1/admin/generations/{generation_id}", headers=ADMIN)).json()
    assert [e["type"] for e in detail["ledger_entries"]] == ["consumption", "adjustment"]
    assert detail["credited_back"] is True
    ledger = (await client.get("/v1/ledger", headers=account.auth)).json()["entries"]
    assert ledger[0]["type"] == "adjustment" and ledger[0]["generation_id"] == generation_id


async def test_concurrent_credit_backs_give_one_credit(client):
    account, site_id, start = await funded_site(client, 5)
    made = await generate(client, account, site_id)
    generation_id = made.json()["id"]
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/admin/generations/{generation_id}/credit-back",
                json={"reason": "race"},
                headers=ADMIN,
            )
            for _ in range(8)
        )
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7
    assert await balance(client, account) == start


async def test_a_failed_generation_has_nothing_to_credit_back(client):
    account, site_id, start = await funded_site(client, 5)
    failed = await client.post(
        "/v1/generations",
        json={
            "kind": "schema",
            "site_id": site_id,
            "input": {"schema_type": "FAQPage", "page_content": "No questions here."},
        },
        headers=account.auth,
    )
    assert failed.status_code == 502
    (found,) = (await listed(client, account_id=str(account.id), status="failed"))["generations"]
    assert found["error_code"] == "generation_failed" and found["credits_charged"] == 0
    refused = await client.post(
        f"/v1/admin/generations/{found['id']}/credit-back", json={"reason": "x"}, headers=ADMIN
    )
    assert refused.status_code == 409 and refused.json()["code"] == "nothing_to_credit_back"
    assert await balance(client, account) == start


async def test_batch_items_are_listed_and_credited_back_like_generations(client):
    account, site_id, start = await funded_site(client, 10)
    batch = await client.post(
        "/v1/generation-batches",
        json={"kind": "meta_title", "site_id": site_id, "items": [CONTENT] * 3},
        headers=account.auth,
    )
    assert batch.status_code == 202
    batch_id = batch.json()["id"]
    deadline = time.monotonic() + 30
    while (await client.get(f"/v1/generation-batches/{batch_id}", headers=account.auth)).json()[
        "status"
    ] != "completed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    items = (await listed(client, account_id=str(account.id)))["generations"]
    assert len(items) == 3 and {i["batch_id"] for i in items} == {batch_id}
    assert {(i["status"], i["credits_charged"]) for i in items} == {("succeeded", 1)}
    assert await balance(client, account) == start - 3

    item_id = items[0]["id"]
    detail = (await client.get(f"/v1/admin/generations/{item_id}", headers=ADMIN)).json()
    assert [(e["type"], e["batch_id"]) for e in detail["ledger_entries"]] == [
        ("consumption", batch_id)
    ]
    back = await client.post(
        f"/v1/admin/generations/{item_id}/credit-back", json={"reason": "bad"}, headers=ADMIN
    )
    assert back.status_code == 201
    assert (back.json()["generation_id"], back.json()["batch_id"]) == (item_id, batch_id)
    again = await client.post(
        f"/v1/admin/generations/{item_id}/credit-back", json={"reason": "bad"}, headers=ADMIN
    )
    assert again.json()["code"] == "already_credited_back"
    assert await balance(client, account) == start - 2

    # Paging, time and status filters.
    first = await listed(client, account_id=str(account.id), limit=2)
    assert len(first["generations"]) == 2 and first["next_cursor"]
    rest = await listed(client, account_id=str(account.id), limit=2, cursor=first["next_cursor"])
    assert len(rest["generations"]) == 1 and rest["next_cursor"] is None
    seen = {g["id"] for g in first["generations"] + rest["generations"]}
    assert seen == {i["id"] for i in items}
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert (await listed(client, account_id=str(account.id), **{"from": later}))[
        "generations"
    ] == []
    assert len((await listed(client, account_id=str(account.id), to=later))["generations"]) == 3
    assert (await listed(client, account_id=str(account.id), status="canceled"))[
        "generations"
    ] == []


async def test_support_look_ups_refuse_bad_input_and_unknown_ids(client):
    for params in (
        {"status": "done"},
        {"from": "yesterday"},
        {"to": "0.5"},  # not a time, though a lax parser reads it as one
        {"from": "2026-02-30T00:00:00Z"},
        {"from": "0001-01-01T00:00:00+01:00"},  # before the first representable instant
        {"limit": 201},
        {"cursor": "1"},
    ):
        bad = await client.get("/v1/admin/generations", params=params, headers=ADMIN)
        assert bad.status_code == 422, params
    unknown = uuid.uuid4()
    assert (await client.get(f"/v1/admin/generations/{unknown}", headers=ADMIN)).status_code == 404
    missing = await client.post(
        f"/v1/admin/generations/{unknown}/credit-back", json={"reason": "x"}, headers=ADMIN
    )
    assert missing.status_code == 404
    blank = await client.post(
        f"/v1/admin/generations/{unknown}/credit-back", json={"reason": "  "}, headers=ADMIN
    )
    assert blank.status_code == 422
    assert (await client.get("/v1/admin/generations")).status_code == 401
