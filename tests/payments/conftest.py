"""An app wired to the stand-in Polar API and the test webhook secret."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from tests.apps import asgi_client, make_settings, running_app
from tests.databases import Database
from tests.fakes.loopback import reset_around
from tests.fakes.polar_server import FakePolar, running_fake_polar
from tests.polar_webhooks import SECRET, delivery

PRODUCTS = {
    "first_time": "11111111-0000-4000-8000-000000000001",
    "refill": "11111111-0000-4000-8000-000000000002",
    "small": "11111111-0000-4000-8000-000000000003",
}
SUBSCRIPTION_PRODUCT = "11111111-0000-4000-8000-0000000000ff"


def payment_settings(database: Database, polar_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "polar_access_token": "polar_oat_test",
        "polar_server_url": polar_url,
        "polar_webhook_secret": SECRET,
        "polar_product_first_time": PRODUCTS["first_time"],
        "polar_product_refill": PRODUCTS["refill"],
        "polar_product_small": PRODUCTS["small"],
        "polar_timeout_seconds": 1.0,
        "rate_limit_purchases_per_minute": 100_000,
        "rate_limit_purchases_burst": 100_000,
    }
    values.update(overrides)
    return make_settings(database, **values)


@pytest.fixture(scope="session")
def fake_polar() -> Iterator[FakePolar]:
    with running_fake_polar() as fake:
        yield fake


@pytest.fixture
def polar(fake_polar: FakePolar) -> Iterator[FakePolar]:
    yield from reset_around(fake_polar)


@pytest.fixture(scope="session")
async def pay_app(database: Database, fake_polar: FakePolar) -> AsyncIterator[FastAPI]:
    async with running_app(payment_settings(database, fake_polar.url)) as application:
        yield application


@pytest.fixture(scope="session")
async def pay_client(pay_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(pay_app) as c:
        yield c


async def send_webhook(
    client: httpx.AsyncClient, event_type: str, data: dict[str, Any], **sign: Any
) -> httpx.Response:
    body, headers = delivery(event_type, data, **sign)
    return await client.post("/v1/webhooks/polar", content=body, headers=headers)
