"""Balance, ledger, estimate, admin adjustments and health over HTTP, on both databases."""

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from app.accounts.models import Account
from app.credits import service
from app.db import utcnow
from tests.apps import app_client
from tests.conftest import ADMIN, Database, adjust, funded_account, make_settings, new_account
from tests.credits.ledger_helpers import TTL
from tests.test_errors import assert_problem


async def get_balance(client, account):
    response = await client.get("/v1/balance", headers=account.auth)
    assert response.status_code == 200, response.text
    return response.json()


async def ledger_entries(client, account):
    response = await client.get(f"/v1/admin/accounts/{account.id}/ledger", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


# --- /v1/balance ---


@pytest.mark.parametrize(
    ("credits", "display"),
    [
        (60_498, "60,498 Credits"),
        (1, "1 Credit"),
        (0, "0 Credits"),
        (1_234_567, "1,234,567 Credits"),
    ],
)
async def test_balance_badge_text(client, database, credits, display):
    account = await funded_account(client, credits)
    response = await client.get("/v1/balance", headers=account.auth)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert (body["available"], body["reserved"], body["display"]) == (credits, 0, display)
    assert (body["usable"], body["subscription_status"]) == (True, "trialing")
    assert body["as_of"].endswith("Z") or body["as_of"].endswith("+00:00")


async def test_balance_shows_reserved_credits_and_badges_only_available(
    client, database, sessionmaker
):
    account = await funded_account(client, 3)
    async with sessionmaker() as session, session.begin():
        await service.reserve(session, account.id, 2, ttl=TTL, reference="generation:x")
    body = await get_balance(client, account)
    assert (body["available"], body["reserved"], body["display"]) == (1, 2, "1 Credit")


async def test_balance_is_not_usable_once_the_trial_is_over(client, database, sessionmaker):
    account = await funded_account(client, 10)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Account)
            .where(Account.id == account.id)
            .values(trial_ends_at=utcnow() - timedelta(minutes=1))
        )
    body = await get_balance(client, account)
    # The balance is kept, frozen.
    assert (body["available"], body["usable"], body["subscription_status"]) == (
        10,
        False,
        "trialing",
    )
    me = (await client.get("/v1/me", headers=account.auth)).json()
    assert me["subscription"]["usable"] is False


async def test_a_new_account_is_trialing_for_trial_days(client, database):
    account = await new_account(client)
    me = (await client.get("/v1/me", headers=account.auth)).json()
    created_at = me["created_at"]
    assert me["subscription"]["status"] == "trialing"
    assert me["subscription"]["usable"] is True
    length = datetime.fromisoformat(me["trial_ends_at"]) - datetime.fromisoformat(created_at)
    assert length == timedelta(days=7)


# --- /v1/ledger ---


async def test_ledger_lists_entries_newest_first_with_every_contract_field(client, database):
    account = await funded_account(client, 10)
    assert (await adjust(client, account, -3)).status_code == 201
    response = await client.get("/v1/ledger", headers=account.auth)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    assert [(e["type"], e["amount"], e["balance_after"]) for e in body["entries"]] == [
        ("adjustment", -3, 7),
        ("adjustment", 10, 10),
    ]
    assert set(body["entries"][0]) == {
        "id",
        "type",
        "amount",
        "balance_after",
        "created_at",
        "description",
        "generation_id",
        "batch_id",
        "purchase_intent_id",
        "polar_order_id",
    }
    assert body["entries"][0]["description"] == "Adjustment: test"


async def test_ledger_pages_with_a_cursor_until_the_end(client, database):
    account = await new_account(client)
    for amount in range(1, 8):
        assert (await adjust(client, account, amount)).status_code == 201

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/ledger", params=params, headers=account.auth)).json()
        pages += 1
        assert len(body["entries"]) <= 3
        seen += [e["amount"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [7, 6, 5, 4, 3, 2, 1]


async def test_ledger_default_limit_is_50(client, database, sessionmaker):
    account = await new_account(client)
    async with sessionmaker() as session, session.begin():
        for _ in range(51):
            await service.grant(session, account.id, 1, type="adjustment", description="x")
    body = (await client.get("/v1/ledger", headers=account.auth)).json()
    assert len(body["entries"]) == 50
    assert body["next_cursor"] is not None
    body = (await client.get("/v1/ledger?limit=200", headers=account.auth)).json()
    assert len(body["entries"]) == 51
    assert body["next_cursor"] is None


@pytest.mark.parametrize("limit", [0, 201])
async def test_ledger_limit_bounds(client, database, limit):
    account = await funded_account(client, 1)
    response = await client.get(f"/v1/ledger?limit={limit}", headers=account.auth)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_ledger_rejects_a_cursor_it_did_not_issue(client, database):
    account = await funded_account(client, 1)
    response = await client.get("/v1/ledger?cursor=bm9wZQ", headers=account.auth)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["query", "cursor"]


async def test_ledger_pages_are_stable_under_concurrent_inserts(client, database):
    account = await new_account(client)
    for amount in range(1, 7):
        assert (await adjust(client, account, amount)).status_code == 201

    first = (await client.get("/v1/ledger?limit=3", headers=account.auth)).json()
    assert [e["amount"] for e in first["entries"]] == [6, 5, 4]

    # New entries land while the client is paging; some race the page-2 request itself.
    inserts = [adjust(client, account, 100 + i) for i in range(5)]
    second_request = client.get(
        "/v1/ledger", params={"limit": 3, "cursor": first["next_cursor"]}, headers=account.auth
    )
    *inserted, second = await asyncio.gather(*inserts, second_request)
    assert all(r.status_code == 201 for r in inserted)
    second = second.json()

    assert [e["amount"] for e in second["entries"]] == [3, 2, 1]
    assert second["next_cursor"] is None
    ids = [e["id"] for e in first["entries"] + second["entries"]]
    assert len(set(ids)) == 6
    newest = (await client.get("/v1/ledger?limit=5", headers=account.auth)).json()
    assert sorted(e["amount"] for e in newest["entries"]) == [100, 101, 102, 103, 104]


async def test_ledger_balance_after_is_the_running_settled_balance(client, database):
    account = await new_account(client)
    for amount in (5, -2, 10, -13):
        assert (await adjust(client, account, amount)).status_code == 201
    entries = await ledger_entries(client, account)
    assert [e["balance_after"] for e in reversed(entries)] == [5, 3, 13, 0]


# --- /v1/estimate ---


@pytest.mark.parametrize(
    ("pages", "images", "schema", "credits"),
    [
        (10, 30, False, {"meta_titles": 10, "meta_descriptions": 10, "alt_text": 30, "schema": 0}),
        (
            50,
            200,
            False,
            {"meta_titles": 50, "meta_descriptions": 50, "alt_text": 200, "schema": 0},
        ),
        (10, 30, True, {"meta_titles": 10, "meta_descriptions": 10, "alt_text": 30, "schema": 10}),
        (0, 0, False, {"meta_titles": 0, "meta_descriptions": 0, "alt_text": 0, "schema": 0}),
    ],
)
async def test_estimate_follows_the_planning_guide(
    client, database, pages, images, schema, credits
):
    account = await new_account(client)
    response = await client.get(
        "/v1/estimate",
        params={"pages": pages, "images": images, "schema": str(schema).lower()},
        headers=account.auth,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["credits"] == {**credits, "total": sum(credits.values())}


async def test_estimate_totals_of_the_help_page(client, database):
    account = await new_account(client)
    small = await client.get("/v1/estimate?pages=10&images=30", headers=account.auth)
    medium = await client.get("/v1/estimate?pages=50&images=200", headers=account.auth)
    assert small.json()["credits"]["total"] == 50
    assert medium.json()["credits"]["total"] == 300


async def test_estimate_recommends_the_first_time_offer_until_a_purchase(
    client, database, sessionmaker
):
    account = await new_account(client)
    before = await client.get("/v1/estimate?pages=10&images=30", headers=account.auth)
    assert before.json()["recommended_package"] == "first_time"

    async with sessionmaker() as session, session.begin():
        await service.grant(
            session,
            account.id,
            30_000,
            type="purchase",
            description="First-time offer",
            polar_order_id=f"order_{uuid.uuid4().hex}",
        )
    small = await client.get("/v1/estimate?pages=10&images=30", headers=account.auth)
    large = await client.get("/v1/estimate?pages=500&images=1000", headers=account.auth)
    assert small.json()["recommended_package"] == "small"
    assert large.json()["recommended_package"] == "refill"


# --- admin adjustments ---


async def test_an_adjustment_is_one_ledger_entry_and_moves_available(client, database):
    account = await funded_account(client, 0)
    response = await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        json={"amount": 250, "reason": "  Refund of credits lost to ticket #4182 "},
        headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    entry = response.json()
    assert (entry["type"], entry["amount"], entry["balance_after"]) == ("adjustment", 250, 250)
    assert entry["description"] == "Adjustment: Refund of credits lost to ticket #4182"
    assert (await get_balance(client, account))["available"] == 250
    assert [e["id"] for e in await ledger_entries(client, account)] == [entry["id"]]


async def test_a_repeated_idempotency_key_applies_the_adjustment_once(client, database):
    account = await funded_account(client, 0)
    key = uuid.uuid4().hex
    first = await adjust(client, account, 40, key=key)
    again = await adjust(client, account, 40, key=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert (await get_balance(client, account))["available"] == 40
    assert len(await ledger_entries(client, account)) == 1


async def test_concurrent_repeats_of_one_idempotency_key_apply_once(client, database):
    account = await funded_account(client, 0)
    key = uuid.uuid4().hex
    responses = await asyncio.gather(*(adjust(client, account, 7, key=key) for _ in range(10)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert (await get_balance(client, account))["available"] == 7
    assert len(await ledger_entries(client, account)) == 1


async def test_an_idempotency_key_reused_with_another_body_is_409(client, database):
    account = await funded_account(client, 0)
    key = uuid.uuid4().hex
    assert (await adjust(client, account, 40, key=key)).status_code == 201
    response = await adjust(client, account, 41, key=key)
    assert_problem(response, 409, "idempotency_key_reused")
    other = await funded_account(client, 0)
    assert_problem(await adjust(client, other, 40, key=key), 409, "idempotency_key_reused")
    assert (await get_balance(client, account))["available"] == 40
    assert (await get_balance(client, other))["available"] == 0


async def test_a_negative_adjustment_past_available_is_409_and_changes_nothing(
    client, database, sessionmaker
):
    account = await funded_account(client, 10)
    async with sessionmaker() as session, session.begin():
        await service.reserve(session, account.id, 4, ttl=TTL, reference="generation:x")
    key = uuid.uuid4().hex

    response = await adjust(client, account, -7, key=key)

    body = assert_problem(response, 409, "insufficient_credits")
    assert (body["needed"], body["available"]) == (7, 6)
    balance = await get_balance(client, account)
    assert (balance["available"], balance["reserved"]) == (6, 4)
    assert len(await ledger_entries(client, account)) == 1
    # Nothing was stored under the key either: once the credits are there, it works.
    assert (await adjust(client, account, -6, key=key)).status_code == 201
    assert (await get_balance(client, account))["available"] == 0


async def test_a_negative_adjustment_of_everything_available_leaves_zero(client, database):
    account = await funded_account(client, 10)
    response = await adjust(client, account, -10)
    assert response.status_code == 201
    assert (response.json()["amount"], response.json()["balance_after"]) == (-10, 0)
    assert (await get_balance(client, account))["display"] == "0 Credits"


@pytest.mark.parametrize(
    ("payload", "headers", "location"),
    [
        ({"amount": 5}, {"Idempotency-Key": "k"}, ["body", "reason"]),
        ({"amount": 5, "reason": ""}, {"Idempotency-Key": "k"}, ["body", "reason"]),
        ({"amount": 5, "reason": "   "}, {"Idempotency-Key": "k"}, ["body", "reason"]),
        ({"amount": 0, "reason": "zero"}, {"Idempotency-Key": "k"}, ["body", "amount"]),
        ({"reason": "no amount"}, {"Idempotency-Key": "k"}, ["body", "amount"]),
        ({"amount": 5, "reason": "no key"}, {}, ["header", "Idempotency-Key"]),
        (
            {"amount": 5, "reason": "empty key"},
            {"Idempotency-Key": ""},
            ["header", "Idempotency-Key"],
        ),
        (
            {"amount": 5, "reason": "long"},
            {"Idempotency-Key": "k" * 256},
            ["header", "Idempotency-Key"],
        ),
    ],
)
async def test_invalid_adjustments_are_422_with_errors(
    client, database, payload, headers, location
):
    account = await funded_account(client, 3)
    headers = {**headers}
    if headers.get("Idempotency-Key") == "k":
        headers["Idempotency-Key"] = uuid.uuid4().hex
    response = await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments", json=payload, headers={**ADMIN, **headers}
    )
    body = assert_problem(response, 422, "validation_error")
    assert location in [e["loc"] for e in body["errors"]]
    assert (await get_balance(client, account))["available"] == 3
    assert len(await ledger_entries(client, account)) == 1


async def test_adjustments_need_the_admin_token(client, database):
    account = await funded_account(client, 3)
    for headers in ({}, account.auth, {"Authorization": "Bearer wrong"}):
        response = await client.post(
            f"/v1/admin/accounts/{account.id}/adjustments",
            json={"amount": 5, "reason": "x"},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert_problem(response, 401, "unauthorized")
    assert (await get_balance(client, account))["available"] == 3


async def test_admin_account_view_shows_balance_and_keys(client, database):
    account = await funded_account(client, 12)
    body = (await client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    assert body["id"] == str(account.id)
    assert (body["balance"]["available"], body["balance"]["display"]) == (12, "12 Credits")
    assert [k["id"] for k in body["api_keys"]] == [str(account.key_id)]
    assert account.key.startswith(body["api_keys"][0]["prefix"])
    assert "key" not in body["api_keys"][0]


# --- health ---


async def test_healthz_answers_ok(client):
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_checks_the_database(client, database):
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_503_when_the_database_does_not_answer():
    # A PostgreSQL port nothing listens on.
    unreachable = Database("postgres", "postgresql+asyncpg://postgres@127.0.0.1:1/none")
    async with app_client(make_settings(unreachable), base_url="http://t") as c:
        assert (await c.get("/healthz")).status_code == 200
        assert_problem(await c.get("/readyz"), 503, "database_unavailable")
