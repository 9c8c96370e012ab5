import uuid

from sqlalchemy import select

from app.payments.models import PurchaseIntent
from tests.conftest import new_account
from tests.payments.conftest import PRODUCTS, send_webhook
from tests.polar_webhooks import order, subscription


async def intents_of(sessionmaker, account) -> list[PurchaseIntent]:
    async with sessionmaker() as session:
        statement = select(PurchaseIntent).where(PurchaseIntent.account_id == account.id)
        return list((await session.execute(statement)).scalars())


async def test_packages_match_the_help_page(pay_client):
    account = await new_account(pay_client)
    response = await pay_client.get("/v1/credit-packages", headers=account.auth)
    assert response.status_code == 200
    packages = {p["id"]: p for p in response.json()["packages"]}
    assert {
        k: (p["credits"], p["price_cents"], p["price_per_credit"]) for k, p in packages.items()
    } == {
        "first_time": (30_000, 4_900, "0.0016"),
        "refill": (30_000, 10_000, "0.0033"),
        "small": (1_000, 1_000, "0.0100"),
    }
    assert all(p["available"] and p["unavailable_reason"] is None for p in packages.values())
    assert all(p["currency"] == "usd" for p in packages.values())


async def test_packages_are_unavailable_where_payments_are_not_configured(client):
    account = await new_account(client)
    packages = (await client.get("/v1/credit-packages", headers=account.auth)).json()["packages"]
    assert {p["unavailable_reason"] for p in packages} == {"payments_not_configured"}
    response = await client.post(
        "/v1/purchase-intents", json={"package_id": "refill"}, headers=account.auth
    )
    assert response.status_code == 503
    assert response.json()["code"] == "service_not_configured"


async def test_intent_opens_a_polar_checkout_through_the_sdk(pay_client, polar):
    account = await new_account(pay_client)
    response = await pay_client.post(
        "/v1/purchase-intents",
        json={"package_id": "refill", "success_url": "https://dashboard.rankframe.com/thanks"},
        headers=account.auth,
    )

    assert response.status_code == 201, response.text
    intent = response.json()
    [call] = polar.checkout_requests()
    assert call.headers["authorization"] == "Bearer polar_oat_test"
    assert call.body["products"] == [PRODUCTS["refill"]]
    assert call.body["external_customer_id"] == str(account.id)
    assert call.body["metadata"] == {"purchase_intent_id": intent["id"], "package_id": "refill"}
    assert call.body["success_url"] == "https://dashboard.rankframe.com/thanks"
    assert intent["status"] == "open"
    assert (intent["package_id"], intent["credits"], intent["price_cents"]) == (
        "refill",
        30_000,
        10_000,
    )
    assert intent["checkout_url"].startswith(f"{polar.url}/checkout/polar_c_")
    read = await pay_client.get(f"/v1/purchase-intents/{intent['id']}", headers=account.auth)
    assert read.status_code == 200
    assert read.json() == intent


async def test_repeat_with_the_same_idempotency_key_returns_the_same_intent(pay_client, polar):
    account = await new_account(pay_client)
    headers = {**account.auth, "Idempotency-Key": "buy-1"}
    first = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "small"}, headers=headers
    )
    again = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "small"}, headers=headers
    )
    other_body = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "refill"}, headers=headers
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert len(polar.checkout_requests()) == 1
    assert other_body.status_code == 409
    assert other_body.json()["code"] == "idempotency_key_reused"


async def test_second_open_first_time_intent_returns_the_open_one(pay_client, polar):
    account = await new_account(pay_client)
    first = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    second = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(polar.checkout_requests()) == 1


async def test_polar_error_is_502_and_leaves_no_intent(pay_client, polar, sessionmaker):
    account = await new_account(pay_client)
    polar.mode = "error"
    headers = {**account.auth, "Idempotency-Key": "buy-after-error"}
    failed = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=headers
    )

    assert failed.status_code == 502
    assert failed.json()["code"] == "payment_provider_error"
    assert await intents_of(sessionmaker, account) == []
    # The same key works once Polar is back.
    polar.mode = "ok"
    retried = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=headers
    )
    assert retried.status_code == 201
    assert [i.status for i in await intents_of(sessionmaker, account)] == ["open"]


async def test_polar_timeout_is_502_and_leaves_no_intent(pay_client, polar, sessionmaker):
    account = await new_account(pay_client)
    polar.mode = "timeout"
    polar.hang_seconds = 3.0  # the app's Polar timeout in these tests is 1 s
    response = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "refill"}, headers=account.auth
    )
    assert response.status_code == 502
    assert response.json()["code"] == "payment_provider_error"
    assert await intents_of(sessionmaker, account) == []


async def test_lapsed_account_cannot_buy_credits(pay_client, polar):
    account = await new_account(pay_client)
    await send_webhook(
        pay_client,
        "subscription.revoked",
        subscription(
            subscription_id=str(uuid.uuid4()),
            account_id=account.id,
            status="canceled",
            modified_at="2026-01-02T00:00:00Z",
            current_period_end="2026-01-02T00:00:00Z",
        ),
    )
    response = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "refill"}, headers=account.auth
    )
    packages = (await pay_client.get("/v1/credit-packages", headers=account.auth)).json()
    assert response.status_code == 403
    assert response.json()["code"] == "subscription_inactive"
    assert polar.checkout_requests() == []
    assert {p["unavailable_reason"] for p in packages["packages"]} == {"subscription_inactive"}


async def test_first_time_offer_refused_after_any_purchase(pay_client, polar):
    account = await new_account(pay_client)
    await send_webhook(
        pay_client, "order.paid", order(product_id=PRODUCTS["small"], account_id=account.id)
    )
    response = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    assert response.status_code == 409
    assert response.json()["code"] == "first_time_offer_unavailable"
    assert polar.checkout_requests() == []


async def test_another_accounts_intent_is_not_found(pay_client, polar):
    owner = await new_account(pay_client)
    stranger = await new_account(pay_client)
    intent = (
        await pay_client.post(
            "/v1/purchase-intents", json={"package_id": "small"}, headers=owner.auth
        )
    ).json()
    response = await pay_client.get(f"/v1/purchase-intents/{intent['id']}", headers=stranger.auth)
    assert response.status_code == 404


async def test_bad_package_or_url_is_a_validation_error(pay_client, polar):
    account = await new_account(pay_client)
    for body in ({"package_id": "huge"}, {"package_id": "small", "success_url": "not a url"}):
        response = await pay_client.post("/v1/purchase-intents", json=body, headers=account.auth)
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
    assert polar.checkout_requests() == []
