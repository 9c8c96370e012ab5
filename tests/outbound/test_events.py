"""Outbound events end to end in one app: crossings, purchases, retries, failure and
redelivery, as a receiver verifying Standard Webhooks signatures sees them."""

import uuid

import pytest

from tests.conftest import ADMIN, TestAccount, adjust, funded_account, new_account
from tests.fakes.event_receiver import FakeReceiver, event_types
from tests.outbound.conftest import eventually
from tests.payments.conftest import PRODUCTS, send_webhook
from tests.polar_webhooks import order


async def deliveries(client, account: TestAccount, status: str | None = None) -> list[dict]:
    params = {"account_id": str(account.id), "limit": 200}
    if status:
        params["status"] = status
    response = await client.get("/v1/admin/event-deliveries", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def all_delivered(client, account: TestAccount, count: int) -> list[dict]:
    async def check():
        found = await deliveries(client, account)
        return (
            found
            if len(found) == count and all(d["status"] == "delivered" for d in found)
            else None
        )

    return await eventually(check)


async def test_alert_settings_default_update_and_bad_values(events_client):
    account = await new_account(events_client)
    got = await events_client.get("/v1/alert-settings", headers=account.auth)
    assert got.status_code == 200 and got.json() == {"low_balance_threshold": 50}

    for bad in (-1, 10_000_001, "5", True, 2.5, None):
        refused = await events_client.put(
            "/v1/alert-settings", json={"low_balance_threshold": bad}, headers=account.auth
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "validation_error"
    missing = await events_client.put("/v1/alert-settings", json={}, headers=account.auth)
    assert missing.status_code == 422

    put = await events_client.put(
        "/v1/alert-settings", json={"low_balance_threshold": 10_000_000}, headers=account.auth
    )
    assert put.status_code == 200 and put.json() == {"low_balance_threshold": 10_000_000}
    again = await events_client.get("/v1/alert-settings", headers=account.auth)
    assert again.json() == {"low_balance_threshold": 10_000_000}
    unauthenticated = await events_client.get("/v1/alert-settings")
    assert unauthenticated.status_code == 401


async def test_low_depleted_and_recovered_each_once_per_crossing(events_client, receiver):
    account = await funded_account(events_client, 100)  # a rise: nothing to say
    for amount in (-50, -1, -10, -39, 5, -5, 3, 47, 10):
        assert (await adjust(events_client, account, amount)).status_code == 201
    # 100 -> 50 (ok) -> 49 low -> 39 -> 0 depleted -> 5 -> 0 -> 3 -> 50 recovered -> 60
    found = await all_delivered(events_client, account, 3)
    received = await eventually(lambda: len(receiver.of_account(account.id)) == 3 and receiver)
    got = receiver.of_account(account.id)
    assert event_types(got) == ["balance.low", "balance.depleted", "balance.recovered"]
    assert [r.body["data"] for r in got] == [
        {"account_id": str(account.id), "available": a, "reserved": 0, "low_balance_threshold": 50}
        for a in (49, 0, 50)
    ]
    assert received.rejected == []  # every signature verified
    by_id = {d["webhook_id"]: d for d in found}
    assert set(by_id) == {r.webhook_id for r in got}
    for delivery in found:  # delivered (after a timeout or two, on a very loaded machine)
        assert delivery["attempts"][-1]["status_code"] == 204


async def test_threshold_changes_are_judged_and_zero_silences(events_client, receiver):
    account = await funded_account(events_client, 100)
    put = events_client.put
    assert (
        await put("/v1/alert-settings", json={"low_balance_threshold": 150}, headers=account.auth)
    ).status_code == 200  # raised above available: low
    assert (
        await put("/v1/alert-settings", json={"low_balance_threshold": 80}, headers=account.auth)
    ).status_code == 200  # lowered under it: recovered
    assert (
        await put("/v1/alert-settings", json={"low_balance_threshold": 0}, headers=account.auth)
    ).status_code == 200
    assert (await adjust(events_client, account, -100)).status_code == 201  # off: nothing
    await all_delivered(events_client, account, 2)
    await eventually(lambda: len(receiver.of_account(account.id)) == 2)
    got = receiver.of_account(account.id)
    assert event_types(got) == ["balance.low", "balance.recovered"]
    assert [r.body["data"]["low_balance_threshold"] for r in got] == [150, 80]


async def test_generations_cross_on_reserve_and_a_failure_bounce_is_no_new_crossing(
    events_client, receiver
):
    account = await funded_account(events_client, 52)
    site = await events_client.post(
        "/v1/sites", json={"framer_project_id": "p1", "name": "Site"}, headers=account.auth
    )
    body = {
        "kind": "meta_title",
        "site_id": site.json()["id"],
        "input": {"page_content": "Handmade ceramic mugs, glazed in small batches."},
    }
    for _ in range(4):
        made = await events_client.post("/v1/generations", json=body, headers=account.auth)
        assert made.status_code == 201, made.text
    await all_delivered(events_client, account, 1)
    await eventually(lambda: len(receiver.of_account(account.id)) == 1)
    (low,) = receiver.of_account(account.id)
    assert low.body["type"] == "balance.low"
    # Judged on `available` when the third generation reserved: 49 left, 1 held.
    assert low.body["data"]["available"] == 49
    assert low.body["data"]["reserved"] == 1
    balance = (await events_client.get("/v1/balance", headers=account.auth)).json()
    assert (balance["available"], balance["reserved"]) == (48, 0)


async def test_depleted_then_recovered_by_a_purchase_and_refund_events(events_client, receiver):
    account = await funded_account(events_client, 10)
    assert (await adjust(events_client, account, -10)).status_code == 201  # low + depleted
    order_id = str(uuid.uuid4())
    paid = order(order_id=order_id, product_id=PRODUCTS["small"], account_id=account.id)
    assert (await send_webhook(events_client, "order.paid", paid)).status_code == 202
    assert (await send_webhook(events_client, "order.paid", paid)).status_code == 202  # dup
    refunded = order(
        order_id=order_id,
        product_id=PRODUCTS["small"],
        account_id=account.id,
        status="refunded",
        total_amount=1000,
        refunded_amount=1000,
    )
    assert (await send_webhook(events_client, "order.refunded", refunded)).status_code == 202
    await all_delivered(events_client, account, 7)
    await eventually(lambda: len(receiver.of_account(account.id)) == 7)
    got = receiver.of_account(account.id)
    assert event_types(got) == [
        "balance.low",
        "balance.depleted",
        "balance.recovered",
        "purchase.completed",
        "balance.low",
        "balance.depleted",
        "purchase.refunded",
    ]
    completed, refund = got[3].body["data"], got[6].body["data"]
    assert completed == {
        "account_id": str(account.id),
        "available": 1000,
        "reserved": 0,
        "low_balance_threshold": 50,
        "package_id": "small",
        "credits": 1000,
        "polar_order_id": order_id,
    }
    assert (refund["credits"], refund["polar_order_id"], refund["available"]) == (
        1000,
        order_id,
        0,
    )


async def test_a_failing_receiver_gets_the_same_webhook_id_until_it_accepts(
    events_client, receiver: FakeReceiver
):
    receiver.fail_first = 2
    account = await funded_account(events_client, 60)
    assert (await adjust(events_client, account, -20)).status_code == 201
    (delivery,) = await all_delivered(events_client, account, 1)
    got = receiver.of_account(account.id)
    assert [r.answered for r in got] == [500, 500, 204]
    assert {r.webhook_id for r in got} == {delivery["webhook_id"]}
    assert len({r.body["timestamp"] for r in got}) == 1  # the same body every time
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 204]
    assert delivery["attempts"][0]["error"] == "HTTP 500"


@pytest.mark.parametrize("mode", ["fail", "redirect"])
async def test_a_receiver_down_for_good_ends_failed_and_can_be_redelivered(
    events_client, receiver: FakeReceiver, mode
):
    receiver.mode = mode  # 503 every time, or a redirect (never followed)
    account = await funded_account(events_client, 60)
    assert (await adjust(events_client, account, -20)).status_code == 201

    async def failed():
        found = await deliveries(events_client, account, "failed")
        return found[0] if found else None

    delivery = await eventually(failed)
    assert len(delivery["attempts"]) == 8  # the first try and seven retries
    assert delivery["next_attempt_at"] is None and delivery["failed_at"]
    assert len(receiver.of_account(account.id)) == 8
    assert {r.webhook_id for r in receiver.of_account(account.id)} == {delivery["webhook_id"]}
    assert await deliveries(events_client, account, "pending") == []

    receiver.mode = "ok"
    again = await events_client.post(
        f"/v1/admin/event-deliveries/{delivery['id']}/redeliver", headers=ADMIN
    )
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    (done,) = await all_delivered(events_client, account, 1)
    assert done["webhook_id"] == delivery["webhook_id"]
    assert [a["status_code"] for a in done["attempts"]][-1] == 204
    assert receiver.of_account(account.id)[-1].webhook_id == delivery["webhook_id"]

    # A delivered event may be sent again too; one still pending may not (409).
    receiver.mode = "hang"
    receiver.hang_seconds = 2.0
    resent = await events_client.post(
        f"/v1/admin/event-deliveries/{delivery['id']}/redeliver", headers=ADMIN
    )
    assert resent.status_code == 202
    pending = await events_client.post(
        f"/v1/admin/event-deliveries/{delivery['id']}/redeliver", headers=ADMIN
    )
    assert pending.status_code == 409 and pending.json()["code"] == "delivery_pending"
    receiver.mode = "ok"
    await all_delivered(events_client, account, 1)


async def test_admin_deliveries_validate_and_page(events_client):
    account = await funded_account(events_client, 100)
    for amount in (-60, 60, -60):  # low, recovered, low
        assert (await adjust(events_client, account, amount)).status_code == 201
    await all_delivered(events_client, account, 3)
    first = await events_client.get(
        "/v1/admin/event-deliveries",
        params={"account_id": str(account.id), "limit": 2},
        headers=ADMIN,
    )
    page = first.json()
    assert [d["type"] for d in page["deliveries"]] == ["balance.low", "balance.recovered"]
    second = await events_client.get(
        "/v1/admin/event-deliveries",
        params={"account_id": str(account.id), "limit": 2, "cursor": page["next_cursor"]},
        headers=ADMIN,
    )
    assert [d["type"] for d in second.json()["deliveries"]] == ["balance.low"]
    assert second.json()["next_cursor"] is None
    for params in ({"status": "sent"}, {"account_id": "x"}, {"cursor": "abc"}, {"limit": 0}):
        bad = await events_client.get("/v1/admin/event-deliveries", params=params, headers=ADMIN)
        assert bad.status_code == 422, params
    assert (await events_client.get("/v1/admin/event-deliveries")).status_code == 401
    missing = await events_client.post(
        f"/v1/admin/event-deliveries/{uuid.uuid4()}/redeliver", headers=ADMIN
    )
    assert missing.status_code == 404


async def test_a_batch_reserve_crosses_once_and_metrics_show_the_outbox(events_client, receiver):
    account = await funded_account(events_client, 52)
    site = await events_client.post(
        "/v1/sites", json={"framer_project_id": "b", "name": "B"}, headers=account.auth
    )
    batch = await events_client.post(
        "/v1/generation-batches",
        json={
            "kind": "meta_title",
            "site_id": site.json()["id"],
            "items": [{"page_content": "Oak tables, made by hand."}] * 5,
        },
        headers=account.auth,
    )
    assert batch.status_code == 202
    (low,) = await all_delivered(events_client, account, 1)
    # All five credits left `available` at once when the batch reserved them.
    assert low["type"] == "balance.low"
    assert (low["payload"]["data"]["available"], low["payload"]["data"]["reserved"]) == (47, 5)
    text = (await events_client.get("/metrics")).text
    assert 'rankframe_event_deliveries_total{outcome="sent",type="balance.low"}' in text
    assert "rankframe_outbox_pending_events" in text
    assert "rankframe_outbox_oldest_pending_age_seconds" in text
