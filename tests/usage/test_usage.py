"""Usage buckets and the CSV export, checked against the ledger itself."""

import asyncio
import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta

from app.usage.service import _text_cell
from tests.conftest import ADMIN, TestAccount, funded_account

TEXT = {"page_content": "Handmade ceramic mugs, glazed in small batches in Lisbon."}
IMAGE = {"image_url": "https://cdn.example.com/red-ceramic-mug.jpg"}


async def site(client, account: TestAccount) -> str:
    made = await client.post(
        "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "S"}, headers=account.auth
    )
    return made.json()["id"]


async def generate(client, account, site_id, kind, payload) -> int:
    made = await client.post(
        "/v1/generations",
        json={"kind": kind, "site_id": site_id, "input": payload},
        headers=account.auth,
    )
    return made.status_code


async def ledger(client, account) -> list[dict]:
    return (await client.get("/v1/ledger?limit=200", headers=account.auth)).json()["entries"]


async def used_account(client) -> tuple[TestAccount, str, str]:
    """Two meta titles and a batch of three descriptions on one site, one alt text on
    another, one failed schema (not charged) and one credit-back."""
    account = await funded_account(client, 20)
    first, second = await site(client, account), await site(client, account)
    assert await generate(client, account, first, "meta_title", TEXT) == 201
    assert await generate(client, account, first, "meta_title", TEXT) == 201
    assert await generate(client, account, second, "alt_text", IMAGE) == 201
    failed = {"schema_type": "FAQPage", "page_content": "No questions."}
    assert await generate(client, account, first, "schema", failed) == 502
    batch = await client.post(
        "/v1/generation-batches",
        json={"kind": "meta_description", "site_id": first, "items": [TEXT] * 3},
        headers=account.auth,
    )
    deadline = time.monotonic() + 30
    while (
        await client.get(f"/v1/generation-batches/{batch.json()['id']}", headers=account.auth)
    ).json()["status"] != "completed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    some = next(e for e in await ledger(client, account) if e["generation_id"])
    back = await client.post(
        f"/v1/admin/generations/{some['generation_id']}/credit-back",
        json={"reason": "test"},
        headers=ADMIN,
    )
    assert back.status_code == 201
    return account, first, second


async def usage(client, account, **params) -> dict:
    response = await client.get("/v1/usage", params=params, headers=account.auth)
    assert response.status_code == 200, response.text
    return response.json()


async def test_usage_buckets_match_the_ledger(client):
    account, first, second = await used_account(client)
    entries = await ledger(client, account)
    consumed = [e for e in entries if e["type"] == "consumption"]
    assert len(consumed) == 6

    by_kind = await usage(client, account, group_by="kind")
    assert by_kind["buckets"] == [
        {"key": "alt_text", "credits": 1, "generations": 1},
        {"key": "meta_description", "credits": 3, "generations": 3},
        {"key": "meta_title", "credits": 2, "generations": 2},
    ]
    assert by_kind["total_credits"] == -sum(e["amount"] for e in consumed) == 6
    by_site = await usage(client, account, group_by="site")
    assert {b["key"]: b["credits"] for b in by_site["buckets"]} == {first: 5, second: 1}
    today = datetime.now(UTC).date()
    by_day = await usage(client, account)
    assert by_day["group_by"] == "day"
    assert (by_day["from"], by_day["to"]) == (str(today - timedelta(days=29)), str(today))
    assert by_day["buckets"] == [{"key": str(today), "credits": 6, "generations": 6}]
    yesterday = str(today - timedelta(days=1))
    empty = await usage(client, account, **{"from": yesterday, "to": yesterday})
    assert empty["buckets"] == [] and empty["total_credits"] == 0
    year = await usage(client, account, **{"from": str(today - timedelta(days=365))})
    assert year["total_credits"] == 6


async def test_usage_refuses_bad_ranges(client):
    account = await funded_account(client, 0)
    today = datetime.now(UTC).date()
    for params in (
        {"group_by": "month"},
        {"from": "2026-02-30"},
        {"from": "01-12-2026"},
        {"from": str(today), "to": str(today - timedelta(days=1))},
        {"from": str(today - timedelta(days=366)), "to": str(today)},
    ):
        bad = await client.get("/v1/usage", params=params, headers=account.auth)
        assert bad.status_code == 422, params
        assert bad.json()["code"] == "validation_error"
    edge = {"from": str(today - timedelta(days=365)), "to": str(today)}
    assert (await client.get("/v1/usage", params=edge, headers=account.auth)).status_code == 200
    # Only an old `from`: the 366 days from it.
    old = await client.get("/v1/usage", params={"from": "2020-01-01"}, headers=account.auth)
    assert old.status_code == 200
    assert (old.json()["from"], old.json()["to"]) == ("2020-01-01", "2020-12-31")
    assert (await client.get("/v1/usage")).status_code == 401


def parse(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_the_csv_export_is_the_ledger(client):
    account, _, _ = await used_account(client)
    response = await client.get("/v1/ledger/export", headers=account.auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    header = response.text.splitlines()[0]
    assert header == (
        "id,created_at,type,amount,balance_after,description,generation_id,batch_id,"
        "purchase_intent_id,polar_order_id"
    )
    rows = parse(response.text)
    entries = list(reversed(await ledger(client, account)))  # the export is oldest first
    assert len(rows) == len(entries) == 9  # a grant, a starter grant, 6 consumptions, 1 back
    for row, entry in zip(rows, entries, strict=True):
        assert row["id"] == entry["id"]
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(
            entry["created_at"]
        )
        assert (row["type"], int(row["amount"]), int(row["balance_after"])) == (
            entry["type"],
            entry["amount"],
            entry["balance_after"],
        )
        assert row["description"] == entry["description"]
        for ref in ("generation_id", "batch_id", "purchase_intent_id", "polar_order_id"):
            assert row[ref] == (entry[ref] or "")

    admin = await client.get(f"/v1/admin/accounts/{account.id}/ledger/export", headers=ADMIN)
    assert admin.status_code == 200 and parse(admin.text) == rows
    today = datetime.now(UTC).date()
    same_day = await client.get(
        "/v1/ledger/export", params={"from": str(today), "to": str(today)}, headers=account.auth
    )
    assert parse(same_day.text) == rows
    before = await client.get(
        "/v1/ledger/export", params={"to": str(today - timedelta(days=1))}, headers=account.auth
    )
    assert parse(before.text) == [] and before.text.startswith("id,created_at")

    assert (await client.get("/v1/ledger/export")).status_code == 401
    assert (
        await client.get(f"/v1/admin/accounts/{uuid.uuid4()}/ledger/export", headers=ADMIN)
    ).status_code == 404
    bad = await client.get("/v1/ledger/export", params={"from": "2026-13-01"}, headers=account.auth)
    assert bad.status_code == 422


def test_free_text_cannot_run_as_a_spreadsheet_formula():
    assert _text_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _text_cell("-1+2") == "'-1+2"
    assert _text_cell("Adjustment: refund") == "Adjustment: refund"
    assert _text_cell(None) == ""
