"""Single generations against the stand-in Claude API, through the real SDK."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.accounts.models import Account
from app.credits.models import CreditHold
from app.db import utcnow
from app.generation.models import Generation
from tests.apps import customer
from tests.generation.conftest import assert_reconciles, balance_of, consumption_entries, open_holds

PAGE = "Vermont Woodworks builds solid oak dining tables by hand. Free delivery in New England."


def meta_title(site_id: str, content: str = PAGE, **extra: object) -> dict:
    return {"kind": "meta_title", "site_id": site_id, "input": {"page_content": content, **extra}}


async def test_a_success_charges_exactly_one_credit_with_its_ledger_entry(
    gen_client, gen_sessionmaker, gen_settings
):
    who = await customer(gen_client, 5)
    response = await gen_client.post(
        "/v1/generations", json=meta_title(who.site_id, language="en"), headers=who.auth
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["credits_charged"] == 1
    assert 0 < len(body["output"]["text"]) <= 60
    assert body["model"] == gen_settings.anthropic_model
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["balance"]["available"] == 4
    assert (await balance_of(gen_client, who))["available"] == 4

    entries = await consumption_entries(gen_sessionmaker, who.id)
    assert [(e.amount, str(e.generation_id)) for e in entries] == [(-1, body["id"])]
    ledger = (await gen_client.get("/v1/ledger", headers=who.auth)).json()["entries"]
    assert ledger[0]["type"] == "consumption" and ledger[0]["generation_id"] == body["id"]

    stored = (await gen_client.get(f"/v1/generations/{body['id']}", headers=who.auth)).json()
    assert stored["status"] == "succeeded" and stored["output"] == body["output"]
    assert await open_holds(gen_sessionmaker, who.id) == []


FAILURES = [
    # (name, kind, input, status, code, reason, calls to Claude)
    ("rate limited after the SDK's retries", "meta_title", "fake:status=429", 503,
     "provider_unavailable", "rate_limited", 3),
    ("server error", "meta_title", "fake:status=500", 502, "generation_failed",
     "upstream_error", 3),
    ("overloaded", "meta_description", "fake:status=529", 503, "provider_unavailable",
     "overloaded", 3),
    ("timeout", "meta_title", "fake:sleep=1.6", 502, "generation_failed", "timeout", 3),
    ("over-long output twice", "meta_description", "fake:long", 502, "generation_failed",
     "output_too_long", 2),
    ("invalid schema JSON twice", "schema", "fake:badjson", 502, "generation_failed",
     "invalid_json", 2),
    ("schema of the wrong @type twice", "schema", "fake:wrongtype", 502, "generation_failed",
     "invalid_schema", 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "marker", "status", "code", "reason", "calls"),
    [f[1:] for f in FAILURES],
    ids=[f[0] for f in FAILURES],
)
async def test_every_failure_costs_nothing(
    gen_client, gen_sessionmaker, fake_anthropic, kind, marker, status, code, reason, calls
):
    who = await customer(gen_client, 3)
    before = await balance_of(gen_client, who)
    nonce = uuid.uuid4().hex
    payload: dict = {"page_content": f"{PAGE} {nonce} {marker}"}
    if kind == "schema":
        payload["schema_type"] = "Product"
    response = await gen_client.post(
        "/v1/generations",
        json={"kind": kind, "site_id": who.site_id, "input": payload},
        headers=who.auth,
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["reason"], problem["credits_charged"]) == (code, reason, 0)
    if status == 503:
        assert response.headers["retry-after"] == "7"
    assert len(fake_anthropic.calls_mentioning(nonce)) == calls

    after = await balance_of(gen_client, who)
    assert (after["available"], after["reserved"]) == (before["available"], before["reserved"])
    assert await consumption_entries(gen_sessionmaker, who.id) == []
    assert await open_holds(gen_sessionmaker, who.id) == []
    stored = await gen_client.get(f"/v1/generations/{problem['generation_id']}", headers=who.auth)
    assert stored.json()["status"] == "failed"
    assert stored.json()["credits_charged"] == 0
    assert stored.json()["error"]["code"] == code


async def test_an_over_long_output_is_retried_once_within_the_same_hold(
    gen_client, gen_sessionmaker, fake_anthropic
):
    who = await customer(gen_client, 2)
    tag = uuid.uuid4().hex
    response = await gen_client.post(
        "/v1/generations",
        json=meta_title(who.site_id, f"{PAGE} fake:long-once={tag}"),
        headers=who.auth,
    )
    assert response.status_code == 201, response.text
    assert len(fake_anthropic.calls_mentioning(tag)) == 2
    assert (await balance_of(gen_client, who))["available"] == 1
    assert len(await consumption_entries(gen_sessionmaker, who.id)) == 1


async def test_alt_text_sends_the_image_by_url_and_drops_image_of_filler(
    gen_client, fake_anthropic
):
    who = await customer(gen_client, 1)
    image_url = f"https://images.example.com/{uuid.uuid4().hex}/barn.jpg"
    response = await gen_client.post(
        "/v1/generations",
        json={
            "kind": "alt_text",
            "site_id": who.site_id,
            "input": {"image_url": image_url, "context": "Our workshop", "language": "en"},
        },
        headers=who.auth,
    )
    assert response.status_code == 201, response.text
    text = response.json()["output"]["text"]
    assert not text.lower().startswith("image of") and len(text) <= 125
    (call,) = fake_anthropic.calls_mentioning(image_url)
    image = call["messages"][0]["content"][0]
    assert image == {"type": "image", "source": {"type": "url", "url": image_url}}


async def test_schema_uses_structured_outputs_and_returns_json_ld_of_the_type(
    gen_client, fake_anthropic
):
    who = await customer(gen_client, 1)
    nonce = uuid.uuid4().hex
    response = await gen_client.post(
        "/v1/generations",
        json={
            "kind": "schema",
            "site_id": who.site_id,
            "input": {"schema_type": "FAQPage", "page_content": f"FAQ {nonce}"},
        },
        headers=who.auth,
    )
    assert response.status_code == 201, response.text
    schema = response.json()["output"]["schema"]
    assert schema["@context"] == "https://schema.org" and schema["@type"] == "FAQPage"
    (call,) = fake_anthropic.calls_mentioning(nonce)
    assert call["output_config"]["format"]["type"] == "json_schema"
    assert "tool_choice" not in call and "tools" not in call


async def test_fifty_concurrent_generations_on_ten_credits(gen_client, gen_sessionmaker):
    who = await customer(gen_client, 10)
    responses = await asyncio.gather(
        *(
            gen_client.post(
                "/v1/generations",
                json=meta_title(who.site_id, f"{PAGE} fake:latency=0.05"),
                headers=who.auth,
            )
            for _ in range(50)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [402] * 40
    for refused in (r for r in responses if r.status_code == 402):
        assert refused.json()["code"] == "insufficient_credits"
        assert refused.json()["needed"] == 1
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (0, 0)
    assert len(await consumption_entries(gen_sessionmaker, who.id)) == 10
    await assert_reconciles(gen_sessionmaker)


async def test_concurrent_requests_with_one_key_make_one_generation_and_one_charge(
    gen_client, gen_sessionmaker
):
    who = await customer(gen_client, 5)
    headers = {**who.auth, "Idempotency-Key": uuid.uuid4().hex}
    body = meta_title(who.site_id, f"{PAGE} fake:latency=0.3")
    responses = await asyncio.gather(
        *(gen_client.post("/v1/generations", json=body, headers=headers) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    # The one that generated is the original; the four that waited got it replayed.
    replayed = sorted(r.headers.get("Idempotency-Replayed", "") for r in responses)
    assert replayed == ["", "true", "true", "true", "true"]
    assert (await balance_of(gen_client, who))["available"] == 4
    assert len(await consumption_entries(gen_sessionmaker, who.id)) == 1

    reused = await gen_client.post(
        "/v1/generations", json=meta_title(who.site_id, "another page"), headers=headers
    )
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert (await balance_of(gen_client, who))["available"] == 4


async def test_a_stored_failure_replays_without_calling_claude_again(gen_client, fake_anthropic):
    who = await customer(gen_client, 2)
    nonce = uuid.uuid4().hex
    headers = {**who.auth, "Idempotency-Key": nonce}
    body = meta_title(who.site_id, f"{PAGE} {nonce} fake:status=500")
    first = await gen_client.post("/v1/generations", json=body, headers=headers)
    again = await gen_client.post("/v1/generations", json=body, headers=headers)
    assert first.status_code == again.status_code == 502
    assert again.json() == first.json()
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    assert len(fake_anthropic.calls_mentioning(nonce)) == 3  # the SDK's tries, once
    assert (await balance_of(gen_client, who))["available"] == 2


async def test_a_client_that_disconnects_still_gets_its_generation_on_retry(
    gen_client, gen_sessionmaker
):
    who = await customer(gen_client, 3)
    headers = {**who.auth, "Idempotency-Key": uuid.uuid4().hex}
    body = meta_title(who.site_id, f"{PAGE} fake:latency=0.4")
    request = asyncio.create_task(gen_client.post("/v1/generations", json=body, headers=headers))
    await asyncio.sleep(0.2)
    # The client hangs up mid-generation. In process (ASGITransport) that cancels the
    # request, as uvicorn does at the end of a graceful shutdown: the generation is stopped
    # uncharged and its key freed (tests/generation/test_shutdown.py has the real server).
    request.cancel()
    (cancelled,) = await asyncio.gather(request, return_exceptions=True)
    if not isinstance(cancelled, asyncio.CancelledError):
        assert cancelled.status_code == 503, cancelled.text
        assert cancelled.json()["code"] == "generation_interrupted"
    assert await open_holds(gen_sessionmaker, who.id) == []
    retry = await gen_client.post("/v1/generations", json=body, headers=headers)
    assert retry.status_code == 201, retry.text
    assert (await balance_of(gen_client, who))["available"] == 2
    entries = await consumption_entries(gen_sessionmaker, who.id)
    assert [str(e.generation_id) for e in entries] == [retry.json()["id"]]
    assert await open_holds(gen_sessionmaker, who.id) == []


async def test_a_result_arriving_after_its_hold_expired_is_not_charged(
    gen_client, gen_sessionmaker
):
    who = await customer(gen_client, 2)
    request = asyncio.create_task(
        gen_client.post(
            "/v1/generations",
            json=meta_title(who.site_id, f"{PAGE} fake:latency=0.4"),
            headers=who.auth,
        )
    )
    for _ in range(100):
        holds = await open_holds(gen_sessionmaker, who.id)
        if holds:
            break
        await asyncio.sleep(0.02)
    (hold,) = holds
    async with gen_sessionmaker() as session, session.begin():  # the hold's time runs out
        await session.execute(
            update(CreditHold)
            .where(CreditHold.id == hold.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = await request
    assert response.status_code == 502
    assert response.json()["reason"] == "reservation_expired"
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (2, 0)
    assert await consumption_entries(gen_sessionmaker, who.id) == []
    await assert_reconciles(gen_sessionmaker)


async def test_a_lapsed_account_gets_403_and_keeps_its_balance(gen_client, gen_sessionmaker):
    who = await customer(gen_client, 7)
    async with gen_sessionmaker() as session, session.begin():
        await session.execute(
            update(Account)
            .where(Account.id == who.id)
            .values(subscription_status="expired", trial_ends_at=utcnow() - timedelta(days=1))
        )
    single = await gen_client.post(
        "/v1/generations", json=meta_title(who.site_id), headers=who.auth
    )
    batch = await gen_client.post(
        "/v1/generation-batches",
        json={"kind": "meta_title", "site_id": who.site_id, "items": [{"page_content": PAGE}]},
        headers=who.auth,
    )
    assert single.status_code == batch.status_code == 403
    assert single.json()["code"] == batch.json()["code"] == "subscription_inactive"
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (7, 0)


async def test_unknown_site_and_bad_input_change_nothing(gen_client, gen_sessionmaker):
    who = await customer(gen_client, 2)
    other = await customer(gen_client, 2)
    missing = await gen_client.post(
        "/v1/generations", json=meta_title(other.site_id), headers=who.auth
    )
    assert missing.status_code == 404
    bad = [
        {"kind": "meta_title", "site_id": who.site_id, "input": {"page_content": ""}},
        {"kind": "meta_title", "site_id": who.site_id, "input": {"page_content": "x" * 50_001}},
        {"kind": "alt_text", "site_id": who.site_id, "input": {"image_url": "http://a.b/c.jpg"}},
        {"kind": "schema", "site_id": who.site_id, "input": {"schema_type": "Thing",
                                                            "page_content": PAGE}},
        {"kind": "poem", "site_id": who.site_id, "input": {"page_content": PAGE}},
        {"kind": "meta_title", "site_id": "not-a-uuid", "input": {"page_content": PAGE}},
    ]  # fmt: skip
    for body in bad:
        response = await gen_client.post("/v1/generations", json=body, headers=who.auth)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
    assert (await balance_of(gen_client, who))["available"] == 2
    async with gen_sessionmaker() as session:
        from sqlalchemy import func, select

        count = await session.scalar(
            select(func.count()).select_from(Generation).where(Generation.account_id == who.id)
        )
    assert count == 0
    other_generation = await gen_client.post(
        "/v1/generations", json=meta_title(other.site_id), headers=other.auth
    )
    hidden = await gen_client.get(
        f"/v1/generations/{other_generation.json()['id']}", headers=who.auth
    )
    assert hidden.status_code == 404
