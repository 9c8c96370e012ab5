"""Per-account rate limits on generation and purchase endpoints, and body limits there:
the right codes, and nothing charged or bought by a refused request."""

import uuid

import pytest
from sqlalchemy import func, select

from app.credits.models import LedgerEntry
from tests.apps import app_client
from tests.conftest import funded_account
from tests.fakes.polar_server import running_fake_polar
from tests.payments.conftest import payment_settings


@pytest.fixture(scope="module")
async def limited(database):
    """An app allowing two generations and one purchase intent per account, then 1/minute."""
    with running_fake_polar() as polar:
        settings = payment_settings(
            database,
            polar.url,
            starter_credits=0,
            rate_limit_generations_per_minute=1,
            rate_limit_generations_burst=2,
            rate_limit_purchases_per_minute=1,
            rate_limit_purchases_burst=1,
        )
        async with app_client(settings, base_url="http://t") as client:
            yield client, polar


async def consumption_count(sessionmaker, account) -> int:
    async with sessionmaker() as session:
        return (
            await session.execute(
                select(func.count()).where(
                    LedgerEntry.account_id == account.id, LedgerEntry.type == "consumption"
                )
            )
        ).scalar_one()


async def test_generations_past_the_limit_are_429_and_charge_nothing(limited, sessionmaker):
    client, _ = limited
    account = await funded_account(client, 10)
    site = await client.post(
        "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "s"}, headers=account.auth
    )
    body = {
        "kind": "meta_title",
        "site_id": site.json()["id"],
        "input": {"page_title": "Oak tables", "page_content": "Solid oak tables made by hand."},
    }
    statuses = []
    for _ in range(3):
        response = await client.post("/v1/generations", json=body, headers=account.auth)
        statuses.append(response.status_code)
    assert statuses == [201, 201, 429]
    assert response.json()["code"] == "rate_limited"
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    balance = (await client.get("/v1/balance", headers=account.auth)).json()
    assert (balance["available"], balance["reserved"]) == (8, 0)
    assert await consumption_count(sessionmaker, account) == 2
    # Another account has a bucket of its own.
    other = await funded_account(client, 1)
    other_site = await client.post(
        "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "s"}, headers=other.auth
    )
    response = await client.post(
        "/v1/generations", json={**body, "site_id": other_site.json()["id"]}, headers=other.auth
    )
    assert response.status_code == 201


async def test_purchase_intents_past_the_limit_are_429_and_open_no_checkout(limited):
    client, polar = limited
    account = await funded_account(client, 0)
    before = len(polar.checkout_requests())
    first = await client.post(
        "/v1/purchase-intents", json={"package_id": "small"}, headers=account.auth
    )
    second = await client.post(
        "/v1/purchase-intents", json={"package_id": "refill"}, headers=account.auth
    )
    assert first.status_code == 201, first.text
    assert second.status_code == 429
    assert second.json()["code"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1
    assert len(polar.checkout_requests()) == before + 1


async def test_oversized_generation_is_413_and_charges_nothing(limited, sessionmaker):
    client, _ = limited
    account = await funded_account(client, 5)
    site = await client.post(
        "/v1/sites", json={"framer_project_id": uuid.uuid4().hex, "name": "s"}, headers=account.auth
    )
    body = {
        "kind": "meta_description",
        "site_id": site.json()["id"],
        "input": {"page_content": "x" * 2_000_000},
    }
    response = await client.post("/v1/generations", json=body, headers=account.auth)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    balance = (await client.get("/v1/balance", headers=account.auth)).json()
    assert (balance["available"], balance["reserved"]) == (5, 0)
    assert await consumption_count(sessionmaker, account) == 0
