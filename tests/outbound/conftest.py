"""Outbound events against a local receiver that verifies every delivery with the
`standardwebhooks` library, on databases of their own (every app with a URL dispatches
whatever its database's outbox holds)."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.apps import app_client
from tests.databases import Database, database_of_its_own
from tests.fakes.event_receiver import SECRET, FakeReceiver, running_receiver
from tests.fakes.loopback import reset_around
from tests.payments.conftest import fake_polar, payment_settings

__all__ = ["fake_polar"]  # the stand-in Polar's fixture, shared with the payments tests

FAST_RETRIES = [0.2] * 7
"""The contract's schedule has seven waits; tests keep the count and shorten the waits."""


def event_settings(database: Database, receiver: FakeReceiver, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "events_webhook_url": receiver.url,
        "events_webhook_secret": SECRET,
        "events_retry_schedule_seconds": FAST_RETRIES,
        "events_dispatch_interval_seconds": 0.05,
        "events_timeout_seconds": 5.0,
        "events_claim_seconds": 8.0,
        "starter_credits": 0,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def fake_receiver() -> Iterator[FakeReceiver]:
    with running_receiver() as fake:
        yield fake


@pytest.fixture
def receiver(fake_receiver: FakeReceiver) -> Iterator[FakeReceiver]:
    yield from reset_around(fake_receiver)


events_database = database_of_its_own("events_database")


@pytest.fixture(scope="session")
async def events_client(
    events_database: Database, fake_receiver: FakeReceiver, fake_polar: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An app that sends events to the receiver and takes Polar webhooks (stand-in Polar)."""
    settings = payment_settings(
        events_database, fake_polar.url, **event_settings(events_database, fake_receiver)
    )
    async with app_client(settings, timeout=60) as client:
        yield client


async def eventually(check: Callable[[], Any], within: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy (an async or plain callable)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
