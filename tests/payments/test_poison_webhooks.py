"""Poison deliveries: signed by Polar (the real Standard Webhooks signature), but with
values the database cannot store or that break a constraint. Each is stored, sanitized,
as `invalid_payload` and acknowledged (never a 500, so Polar does not retry it until it
disables the endpoint), twice each; nothing is granted; the next valid delivery works."""

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.payments.models import WebhookEvent
from tests.conftest import new_account
from tests.payments.conftest import PRODUCTS
from tests.polar_webhooks import delivery, order, subscription

REFILL = PRODUCTS["refill"]


def _paid(account_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return {**order(product_id=REFILL, account_id=account_id), **fields}


POISONS: dict[str, Any] = {
    "nul_in_type": lambda a: ("order.paid\x00", _paid(a)),
    "nul_in_order_id": lambda a: ("order.paid", _paid(a, id="ord_\x00" + uuid.uuid4().hex)),
    "over_long_order_id": lambda a: ("order.paid", _paid(a, id="o" * 300)),
    "nul_in_product_id": lambda a: ("order.paid", _paid(a, product_id="p\x00")),
    "nul_in_customer_external_id": lambda a: (
        "order.paid",
        _paid(a, customer={"id": "c", "external_id": f"{a}\x00"}),
    ),
    "over_long_refunded_order_id": lambda a: (
        "order.refunded",
        _paid(a, id="r" * 300, status="refunded", refunded_amount=10_000),
    ),
    "amount_out_of_range": lambda a: (
        "order.refunded",
        _paid(a, status="partially_refunded", total_amount=2**80, refunded_amount=2**79),
    ),
    "over_long_subscription_id": lambda a: (
        "subscription.updated",
        subscription(
            subscription_id="s" * 300,
            account_id=a,
            status="active",
            modified_at="2026-11-01T00:00:00Z",
            current_period_end="2026-12-31T00:00:00Z",
        ),
    ),
    "nul_in_subscription_id": lambda a: (
        "subscription.updated",
        subscription(
            subscription_id="sub_\x00",
            account_id=a,
            status="active",
            modified_at="2026-11-01T00:00:00Z",
            current_period_end="2026-12-31T00:00:00Z",
        ),
    ),
}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_a_poison_delivery_is_stored_as_invalid_payload_and_the_next_one_works(
    pay_client: httpx.AsyncClient, sessionmaker, poison: str
):
    account = await new_account(pay_client)
    event_type, data = POISONS[poison](account.id)
    webhook_id = f"msg_poison_{uuid.uuid4().hex}"
    body, headers = delivery(event_type, data, webhook_id=webhook_id)
    # Polar retries a delivery with the same `webhook-id`: both answers are acknowledgements.
    for attempt in range(2):
        response = await pay_client.post("/v1/webhooks/polar", content=body, headers=headers)
        assert response.status_code in (200, 202), (attempt, response.status_code, response.text)
        assert response.json()["duplicate"] is (attempt == 1)

    async with sessionmaker() as session:
        events = list(
            (
                await session.execute(
                    select(WebhookEvent).where(WebhookEvent.webhook_id == webhook_id)
                )
            ).scalars()
        )
    assert len(events) == 1
    (event,) = events
    assert event.outcome == "invalid_payload", (event.outcome, event.detail)
    assert "\x00" not in event.event_type
    assert event.event_type.startswith(event_type.replace("\x00", "")[:20])
    assert event.detail
    assert "\x00" not in str(event.payload)

    balance = await pay_client.get("/v1/balance", headers=account.auth)
    assert balance.json()["available"] == 0

    # The endpoint is healthy: the next valid delivery grants.
    body, headers = delivery("order.paid", order(product_id=REFILL, account_id=account.id))
    paid = await pay_client.post("/v1/webhooks/polar", content=body, headers=headers)
    assert paid.status_code == 202, paid.text
    balance = await pay_client.get("/v1/balance", headers=account.auth)
    assert balance.json()["available"] == 30_000
