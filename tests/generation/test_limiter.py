"""The adaptive provider limiter on its own (a fake clock where time matters)."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.generation.limiter import AdaptiveLimiter, SlotUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_429_halves_the_limit_once_per_round_and_successes_grow_it_back_slowly():
    limiter = AdaptiveLimiter(8, clock=Clock())
    assert limiter.allowed == 8
    limiter.observe(429, {"retry-after-ms": "0"})
    assert limiter.allowed == 4
    # The other calls of the same round are refused too: one cut for them all.
    limiter.observe(429, {"retry-after-ms": "0"})
    limiter.observe(529, {"retry-after-ms": "0"})
    assert limiter.allowed == 4
    for _ in range(3):
        limiter.observe(200, {})
    assert limiter.allowed == 4  # 4.0 + 1/4 + ... < 5
    for _ in range(2):
        limiter.observe(200, {})
    assert limiter.allowed == 5
    for _ in range(100):
        limiter.observe(200, {})
    assert limiter.allowed == 8  # never above GENERATION_CONCURRENCY


async def test_near_the_level_that_was_refused_the_limit_grows_slowly_then_forgets_it():
    limiter = AdaptiveLimiter(8, clock=Clock())
    limiter.limit = 5.0
    limiter.observe(429, {"retry-after-ms": "0"})  # refused at 5
    assert limiter.allowed == 2
    successes = 0
    while limiter.allowed < 4:
        limiter.observe(200, {})
        successes += 1
    assert successes <= 5  # back to one below the refused level at the usual pace
    successes = 0
    while limiter.allowed < 5:
        limiter.observe(200, {})
        successes += 1
    assert successes >= 4 * 8 - 8  # the last slot before it: eight times slower
    while limiter.limit <= 5.0:
        limiter.observe(200, {})
    successes = 0
    while limiter.allowed < 6:  # above it without a refusal: the usual pace again
        limiter.observe(200, {})
        successes += 1
    assert successes <= 6


async def test_the_limit_never_drops_below_one():
    limiter = AdaptiveLimiter(4, clock=Clock())
    for _ in range(10):
        limiter._calls_started += 10  # a new round each time
        limiter.observe(429, {"retry-after-ms": "0"})
    assert limiter.allowed == 1 and limiter.rate_limited == 10


async def test_retry_after_pauses_new_calls():
    limiter = AdaptiveLimiter(4)
    limiter.observe(429, {"retry-after": "7", "retry-after-ms": "300"})  # the precise one wins
    with pytest.raises(SlotUnavailable) as refused:
        async with limiter.slot(0.05):
            pass
    assert refused.value.retry_after_seconds == 1
    await asyncio.sleep(0.3)
    async with limiter.slot(0.05):
        assert limiter.in_use == 1
    assert limiter.in_use == 0


async def test_nothing_remaining_pauses_until_the_reset_and_little_remaining_stops_growth():
    clock = Clock()
    limiter = AdaptiveLimiter(8, clock=clock)
    limiter.limit = 4.0
    limiter.observe(200, {"anthropic-ratelimit-requests-remaining": "2"})
    assert limiter.limit == 4.0  # 2 left: no more than this process could add itself
    reset = (datetime.now(UTC) + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    limiter.observe(
        200,
        {
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": reset,
        },
    )
    assert limiter.limit == 4.0
    assert 2.0 < limiter.paused_until - clock.now <= 3.0
    limiter.observe(200, {"anthropic-ratelimit-requests-remaining": "not a number"})
    assert limiter.limit > 4.0  # unreadable headers are ignored


async def test_at_most_limit_calls_at_once_and_a_bounded_wait_gives_up():
    limiter = AdaptiveLimiter(2)
    held = asyncio.Event()
    release = asyncio.Event()

    async def call() -> None:
        async with limiter.slot():
            held.set()
            await release.wait()

    calls = [asyncio.create_task(call()) for _ in range(2)]
    await held.wait()
    await asyncio.sleep(0)
    assert limiter.in_use == 2
    with pytest.raises(SlotUnavailable):
        async with limiter.slot(0.05):
            pass
    release.set()
    await asyncio.gather(*calls)
    async with limiter.slot(0.05):
        assert limiter.in_use == 1


async def test_a_waiting_single_generation_goes_before_waiting_batch_workers():
    limiter = AdaptiveLimiter(1)
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await release.wait()

    async def waiter(name: str, wait_seconds: float | None) -> None:
        async with limiter.slot(wait_seconds):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    batch = asyncio.create_task(waiter("batch", None))
    await asyncio.sleep(0.01)
    single = asyncio.create_task(waiter("single", 5.0))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, batch, single)
    assert order == ["single", "batch"]


async def test_a_single_generation_without_a_free_slot_answers_503_and_costs_nothing(
    gen_app, gen_client, gen_sessionmaker, fake_anthropic, monkeypatch
):
    from tests.apps import customer
    from tests.generation.conftest import balance_of, open_holds

    runtime = gen_app.state.generation
    monkeypatch.setattr(runtime.settings, "generation_slot_wait_seconds", 0.3)
    who = await customer(gen_client, 5)
    release, all_taken = asyncio.Event(), asyncio.Event()
    slots = runtime.limiter.allowed
    taken = 0

    async def hold_a_slot() -> None:
        nonlocal taken
        async with runtime.limiter.slot():
            taken += 1
            if taken == slots:
                all_taken.set()
            await release.wait()

    holders = [asyncio.create_task(hold_a_slot()) for _ in range(slots)]
    try:
        await all_taken.wait()
        nonce = uuid.uuid4().hex
        response = await gen_client.post(
            "/v1/generations",
            json={"kind": "meta_title", "site_id": who.site_id, "input": {"page_content": nonce}},
            headers=who.auth,
        )
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "provider_unavailable"
    assert response.json()["credits_charged"] == 0
    assert int(response.headers["retry-after"]) >= 1
    assert fake_anthropic.calls_mentioning(nonce) == []
    balance = await balance_of(gen_client, who)
    assert (balance["available"], balance["reserved"]) == (5, 0)
    assert await open_holds(gen_sessionmaker, who.id) == []
