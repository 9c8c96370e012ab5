import asyncio
import json
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.credits import service as credits
from app.payments.models import PurchaseIntent, WebhookEvent
from tests.conftest import ADMIN, adjust, new_account
from tests.payments.conftest import PRODUCTS, SUBSCRIPTION_PRODUCT, send_webhook
from tests.polar_webhooks import SECRET, delivery, order, signed_headers, subscription

REFILL = PRODUCTS["refill"]


async def available(client, account) -> int:
    response = await client.get("/v1/balance", headers=account.auth)
    assert response.status_code == 200, response.text
    return response.json()["available"]


async def ledger(client, account) -> list[dict]:
    response = await client.get(f"/v1/admin/accounts/{account.id}/ledger", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


async def inbox_rows(sessionmaker, webhook_id: str) -> int:
    async with sessionmaker() as session:
        return (
            await session.execute(select(func.count()).where(WebhookEvent.webhook_id == webhook_id))
        ).scalar_one()


SIGNATURE_CASES = {
    "valid_legacy_key": (lambda body: signed_headers(body, form="legacy"), 202),
    "valid_standard_key": (lambda body: signed_headers(body, form="standard"), 202),
    "wrong_secret": (lambda body: signed_headers(body, secret="whsec_" + "A" * 40), 403),
    "timestamp_6_minutes_old": (
        lambda body: signed_headers(body, timestamp=int(time.time()) - 360),
        403,
    ),
    "missing_webhook_id": (
        lambda body: {k: v for k, v in signed_headers(body).items() if k != "webhook-id"},
        403,
    ),
    "missing_timestamp": (
        lambda body: {k: v for k, v in signed_headers(body).items() if k != "webhook-timestamp"},
        403,
    ),
    "missing_signature": (
        lambda body: {k: v for k, v in signed_headers(body).items() if k != "webhook-signature"},
        403,
    ),
    "malformed_signature_header": (
        lambda body: {**signed_headers(body), "webhook-signature": "v1 not-base64!!"},
        403,
    ),
    "unversioned_signature": (
        lambda body: {
            **signed_headers(body),
            "webhook-signature": signed_headers(body)["webhook-signature"].removeprefix("v1,"),
        },
        403,
    ),
}


@pytest.mark.parametrize("case", [*SIGNATURE_CASES, "tampered_body"])
async def test_signature_matrix_only_valid_signatures_change_anything(
    pay_client, sessionmaker, case
):
    account = await new_account(pay_client)
    body, _ = delivery("order.paid", order(product_id=REFILL, account_id=account.id))
    if case == "tampered_body":
        headers = signed_headers(body)
        body = body.replace(b"buyer@example.com", b"thief@example.com")
        expected = 403
    else:
        make_headers, expected = SIGNATURE_CASES[case]
        headers = make_headers(body)

    response = await pay_client.post("/v1/webhooks/polar", content=body, headers=headers)

    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.json()["code"] == "invalid_signature"
        assert await available(pay_client, account) == 0
        assert await ledger(pay_client, account) == []
        if "webhook-id" in headers:
            assert await inbox_rows(sessionmaker, headers["webhook-id"]) == 0
    else:
        assert await available(pay_client, account) == 30_000
        assert await inbox_rows(sessionmaker, headers["webhook-id"]) == 1


async def test_webhook_without_a_configured_secret_is_refused(client):
    account = await new_account(client)
    body, headers = delivery("order.paid", order(product_id=REFILL, account_id=account.id))
    response = await client.post("/v1/webhooks/polar", content=body, headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert await available(client, account) == 0


async def test_same_order_ten_concurrent_deliveries_and_a_redelivery_grant_once(
    pay_client, sessionmaker
):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id)
    body, headers = delivery("order.paid", paid)

    responses = await asyncio.gather(
        *(pay_client.post("/v1/webhooks/polar", content=body, headers=headers) for _ in range(10))
    )
    # Polar retries with a new delivery id for the same order.
    again = await send_webhook(pay_client, "order.paid", paid)

    assert [r.status_code for r in responses] == [202] * 10
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert again.status_code == 202
    purchases = [e for e in await ledger(pay_client, account) if e["type"] == "purchase"]
    assert len(purchases) == 1
    assert purchases[0]["amount"] == 30_000
    assert purchases[0]["polar_order_id"] == paid["id"]
    assert await available(pay_client, account) == 30_000
    assert await inbox_rows(sessionmaker, headers["webhook-id"]) == 1


async def test_order_created_and_subscription_orders_never_grant(pay_client):
    account = await new_account(pay_client)
    created = await send_webhook(
        pay_client, "order.created", order(product_id=REFILL, account_id=account.id)
    )
    subscription_order = await send_webhook(
        pay_client,
        "order.paid",
        order(product_id=SUBSCRIPTION_PRODUCT, account_id=account.id),
    )
    assert created.status_code == 202
    assert subscription_order.status_code == 202
    assert await available(pay_client, account) == 0


async def test_signed_event_of_an_unknown_type_is_acknowledged(pay_client, sessionmaker):
    body = json.dumps({"type": "benefit.created", "data": {"id": "x"}}).encode()
    headers = signed_headers(body)
    response = await pay_client.post("/v1/webhooks/polar", content=body, headers=headers)
    assert response.status_code == 202
    assert await inbox_rows(sessionmaker, headers["webhook-id"]) == 1


async def test_signed_order_paid_without_its_fields_is_acknowledged_and_changes_nothing(
    pay_client,
):
    account = await new_account(pay_client)
    response = await send_webhook(pay_client, "order.paid", {"customer": "nope"})
    assert response.status_code == 202
    assert await available(pay_client, account) == 0


async def test_paid_order_completes_its_intent_and_closes_the_first_time_offer(pay_client, polar):
    account = await new_account(pay_client)
    created = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    assert created.status_code == 201, created.text
    intent = created.json()
    checkout_request = polar.checkout_requests()[-1].body

    response = await send_webhook(
        pay_client,
        "order.paid",
        order(
            product_id=PRODUCTS["first_time"],
            account_id=account.id,
            metadata=checkout_request["metadata"],
            total_amount=4900,
        ),
    )

    assert response.status_code == 202
    read = await pay_client.get(f"/v1/purchase-intents/{intent['id']}", headers=account.auth)
    assert read.json()["status"] == "completed"
    assert await available(pay_client, account) == 30_000
    [entry] = await ledger(pay_client, account)
    assert entry["purchase_intent_id"] == intent["id"]
    packages = (await pay_client.get("/v1/credit-packages", headers=account.auth)).json()
    first_time = next(p for p in packages["packages"] if p["id"] == "first_time")
    assert first_time["available"] is False
    assert first_time["unavailable_reason"] == "first_time_offer_used"
    again = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    assert again.status_code == 409
    assert again.json()["code"] == "first_time_offer_unavailable"


async def test_two_paid_first_time_checkouts_are_both_credited_and_one_is_flagged(
    pay_client, polar
):
    account = await new_account(pay_client)
    first = (
        await pay_client.post(
            "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
        )
    ).json()
    first_checkout = polar.checkout_requests()[-1].body
    first_checkout_id = first["checkout_url"].rsplit("polar_c_", 1)[1]
    # The first checkout expires in Polar; the buyer opens a new one...
    expired = await send_webhook(
        pay_client,
        "checkout.updated",
        {"id": first_checkout_id, "status": "expired", "metadata": first_checkout["metadata"]},
    )
    assert expired.status_code == 202
    second = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "first_time"}, headers=account.auth
    )
    assert second.status_code == 201
    second = second.json()
    assert second["id"] != first["id"]
    second_checkout = polar.checkout_requests()[-1].body

    # ...and both get paid (the first from a stale tab).
    for metadata in (first_checkout["metadata"], second_checkout["metadata"]):
        paid = await send_webhook(
            pay_client,
            "order.paid",
            order(product_id=PRODUCTS["first_time"], account_id=account.id, metadata=metadata),
        )
        assert paid.status_code == 202

    assert await available(pay_client, account) == 60_000
    admin_view = (await pay_client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    [flagged] = admin_view["purchases_needing_review"]
    assert flagged["purchase_intent_id"] == second["id"]
    assert flagged["credits"] == 30_000
    for intent in (first, second):
        read = await pay_client.get(f"/v1/purchase-intents/{intent['id']}", headers=account.auth)
        assert read.json()["status"] == "completed"


async def test_refund_after_partial_spending_takes_back_only_what_is_left(pay_client, sessionmaker):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id)
    assert (await send_webhook(pay_client, "order.paid", paid)).status_code == 202
    # Spend 29,000 of the 30,000 through the ledger's own reserve and settle.
    async with sessionmaker() as session, session.begin():
        hold = await credits.reserve(
            session, account.id, 29_000, ttl=timedelta(minutes=5), reference="test:spend"
        )
    async with sessionmaker() as session, session.begin():
        await credits.settle(session, hold.id, 29_000, description="test spend")

    refunded = {**paid, "status": "refunded", "refunded_amount": paid["total_amount"]}
    response = await send_webhook(pay_client, "order.refunded", refunded)
    duplicate = await send_webhook(pay_client, "order.refunded", refunded)

    assert response.status_code == 202
    assert duplicate.status_code == 202
    assert await available(pay_client, account) == 0
    reversals = [e for e in await ledger(pay_client, account) if e["type"] == "refund_reversal"]
    assert len(reversals) == 1
    assert reversals[0]["amount"] == -1_000
    assert reversals[0]["polar_order_id"] == paid["id"]
    assert reversals[0]["balance_after"] == 0
    async with sessionmaker() as session, session.begin():
        assert await credits.find_mismatches(session) == []


async def test_refund_delivered_before_its_payment_nets_to_zero(pay_client, sessionmaker):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id)
    refunded = {**paid, "status": "refunded", "refunded_amount": paid["total_amount"]}

    assert (await send_webhook(pay_client, "order.refunded", refunded)).status_code == 202
    assert (await send_webhook(pay_client, "order.paid", paid)).status_code == 202

    assert await available(pay_client, account) == 0
    types = sorted(e["type"] for e in await ledger(pay_client, account))
    assert types == ["purchase", "refund_reversal"]
    async with sessionmaker() as session:
        intent = (
            await session.execute(
                select(PurchaseIntent).where(PurchaseIntent.polar_order_id == paid["id"])
            )
        ).scalar_one()
    assert intent.status == "refunded"


async def test_partial_refund_takes_back_the_same_share_of_credits(pay_client):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id, total_amount=10_000)
    await send_webhook(pay_client, "order.paid", paid)
    partial = {**paid, "status": "partially_refunded", "refunded_amount": 2_500}
    assert (await send_webhook(pay_client, "order.refunded", partial)).status_code == 202
    assert await available(pay_client, account) == 22_500


def _iso(seconds_ago: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


async def test_out_of_order_subscription_events_end_in_the_newest_state(pay_client):
    account = await new_account(pay_client)
    subscription_id = str(uuid.uuid4())
    period_end = _iso(-30 * 86400)
    events = [  # (event type, Polar status, modified_at, cancel_at_period_end)
        ("subscription.created", "active", _iso(300), False),
        ("subscription.canceled", "active", _iso(200), True),
        ("subscription.revoked", "canceled", _iso(100), False),
    ]
    # Delivered newest first.
    for event_type, status, modified_at, cancel in reversed(events):
        response = await send_webhook(
            pay_client,
            event_type,
            subscription(
                subscription_id=subscription_id,
                account_id=account.id,
                status=status,
                modified_at=modified_at,
                current_period_end=period_end,
                cancel_at_period_end=cancel,
            ),
        )
        assert response.status_code == 202

    me = (await pay_client.get("/v1/me", headers=account.auth)).json()
    assert me["subscription"]["status"] == "expired"
    assert me["subscription"]["usable"] is False


async def test_lapsed_account_keeps_a_frozen_balance_that_a_renewal_unfreezes(pay_client):
    account = await new_account(pay_client)
    assert (await adjust(pay_client, account, 700)).status_code == 201
    subscription_id = str(uuid.uuid4())
    period_end = _iso(-30 * 86400)

    def sub(status: str, seconds_ago: int, cancel: bool = False) -> dict:
        return subscription(
            subscription_id=subscription_id,
            account_id=account.id,
            status=status,
            modified_at=_iso(seconds_ago),
            current_period_end=period_end,
            cancel_at_period_end=cancel,
        )

    await send_webhook(pay_client, "subscription.active", sub("active", 300))
    await send_webhook(pay_client, "subscription.revoked", sub("canceled", 200))
    frozen = (await pay_client.get("/v1/balance", headers=account.auth)).json()
    refused = await pay_client.post(
        "/v1/purchase-intents", json={"package_id": "small"}, headers=account.auth
    )
    await send_webhook(pay_client, "subscription.active", sub("active", 100))
    renewed = (await pay_client.get("/v1/balance", headers=account.auth)).json()

    assert (frozen["available"], frozen["usable"], frozen["subscription_status"]) == (
        700,
        False,
        "expired",
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "subscription_inactive"
    assert (renewed["available"], renewed["usable"], renewed["subscription_status"]) == (
        700,
        True,
        "active",
    )


async def test_cancel_at_period_end_stays_usable_until_the_period_ends(pay_client):
    account = await new_account(pay_client)
    response = await send_webhook(
        pay_client,
        "subscription.canceled",
        subscription(
            subscription_id=str(uuid.uuid4()),
            account_id=account.id,
            status="active",
            modified_at=_iso(10),
            current_period_end=_iso(-86400),
            cancel_at_period_end=True,
        ),
    )
    assert response.status_code == 202
    me = (await pay_client.get("/v1/me", headers=account.auth)).json()["subscription"]
    assert (me["status"], me["usable"], me["cancel_at_period_end"]) == ("canceled", True, True)


async def test_expired_checkout_marks_its_intent_expired(pay_client, polar):
    account = await new_account(pay_client)
    intent = (
        await pay_client.post(
            "/v1/purchase-intents", json={"package_id": "small"}, headers=account.auth
        )
    ).json()
    checkout_id = intent["checkout_url"].rsplit("polar_c_", 1)[1]
    response = await send_webhook(
        pay_client, "checkout.updated", {"id": checkout_id, "status": "expired", "metadata": {}}
    )
    assert response.status_code == 202
    read = await pay_client.get(f"/v1/purchase-intents/{intent['id']}", headers=account.auth)
    assert read.json()["status"] == "expired"


async def test_secret_is_checked_with_the_sdk_for_both_key_forms():
    """The helper's two key forms are the two polar-sdk accepts (and nothing else is)."""
    from polar.webhooks import PolarWebhookVerificationError, validate_event

    body = b'{"type": "order.paid", "data": {}}'
    for form in ("legacy", "standard"):
        payload = validate_event(
            body, signed_headers(body, form=form), SECRET, frozenset({"order.paid"}), dict
        )
        assert payload["type"] == "order.paid"
    with pytest.raises(PolarWebhookVerificationError):
        validate_event(
            body,
            signed_headers(body, secret="whsec_" + "B" * 40),
            SECRET,
            frozenset({"order.paid"}),
            dict,
        )


async def reversals_of(client, account) -> list[int]:
    return [e["amount"] for e in await ledger(client, account) if e["type"] == "refund_reversal"]


async def test_a_second_refund_of_an_order_takes_back_the_difference(pay_client, sessionmaker):
    """Polar reports the order's cumulative refund: 25% refunded, then the rest."""
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id, total_amount=10_000)
    await send_webhook(pay_client, "order.paid", paid)
    quarter = {**paid, "status": "partially_refunded", "refunded_amount": 2_500}
    assert (await send_webhook(pay_client, "order.refunded", quarter)).status_code == 202
    assert await available(pay_client, account) == 22_500
    rest = {**paid, "status": "refunded", "refunded_amount": 10_000}
    assert (await send_webhook(pay_client, "order.refunded", rest)).status_code == 202
    assert await available(pay_client, account) == 0
    assert sorted(await reversals_of(pay_client, account)) == [-22_500, -7_500]
    async with sessionmaker() as session, session.begin():
        assert await credits.find_mismatches(session) == []


async def test_successive_partial_refunds_take_back_the_cumulative_share_once(pay_client):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id, total_amount=10_000)
    await send_webhook(pay_client, "order.paid", paid)
    quarter = {**paid, "status": "partially_refunded", "refunded_amount": 2_500}
    sixty = {**paid, "status": "partially_refunded", "refunded_amount": 6_000}
    for event in (quarter, sixty, sixty, quarter):  # redeliveries and a late lower level
        assert (await send_webhook(pay_client, "order.refunded", event)).status_code == 202
    assert await available(pay_client, account) == 12_000
    assert sorted(await reversals_of(pay_client, account)) == [-10_500, -7_500]


async def test_a_partial_refund_arriving_after_the_full_one_takes_nothing_more(pay_client):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id, total_amount=10_000)
    await send_webhook(pay_client, "order.paid", paid)
    full = {**paid, "status": "refunded", "refunded_amount": 10_000}
    partial = {**paid, "status": "partially_refunded", "refunded_amount": 4_000}
    assert (await send_webhook(pay_client, "order.refunded", full)).status_code == 202
    assert (await send_webhook(pay_client, "order.refunded", partial)).status_code == 202
    assert await available(pay_client, account) == 0
    assert await reversals_of(pay_client, account) == [-30_000]


async def test_concurrent_refunds_of_one_order_take_back_the_order_once(pay_client):
    account = await new_account(pay_client)
    paid = order(product_id=REFILL, account_id=account.id, total_amount=10_000)
    await send_webhook(pay_client, "order.paid", paid)
    events = [
        {**paid, "status": "partially_refunded", "refunded_amount": cents}
        for cents in (2_000, 5_000, 8_000)
    ] + [{**paid, "status": "refunded", "refunded_amount": 10_000}] * 3
    responses = await asyncio.gather(
        *(send_webhook(pay_client, "order.refunded", event) for event in events)
    )
    assert {r.status_code for r in responses} == {202}
    assert await available(pay_client, account) == 0
    assert sum(await reversals_of(pay_client, account)) == -30_000
