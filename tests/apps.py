"""The one way tests build the app and talk to it: settings for a test database, the app
with its lifespan running, an httpx client over ASGI, the admin's credentials, and
accounts (with their key, credits and a connected site) made through the API. Real
uvicorn processes are in tests/servers.py; both take the same admin token."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.databases import Database, pooler_settings

ADMIN_TOKEN = "test-admin-token-" + "x" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def make_settings(database: Database, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database.url,
        "admin_token": ADMIN_TOKEN,
        "starter_credits": 500,
        "trial_days": 7,
        "hold_sweep_interval_seconds": 3600.0,
        # Up to 10 connections per engine: the PostgreSQL server (100 connections) is
        # shared with teammates' test runs and benchmarks.
        "db_pool_size": 5,
        "anthropic_api_key": None,
        "polar_access_token": None,
        "polar_webhook_secret": None,
        **pooler_settings(database.url),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app built with `settings`, its lifespan (workers, listeners) running."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def asgi_client(
    app: FastAPI,
    *,
    base_url: str = "http://testserver",
    raise_app_exceptions: bool = True,
    client: tuple[str, int] = ("127.0.0.1", 123),
    **options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that calls `app` in process (`client` is the peer address the app
    sees); `options` go to `httpx.AsyncClient` (a `timeout`, say)."""
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=raise_app_exceptions, client=client
    )
    async with httpx.AsyncClient(transport=transport, base_url=base_url, **options) as c:
        yield c


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """`running_app` and an `asgi_client` over it."""
    async with running_app(settings) as application, asgi_client(application, **options) as c:
        yield c


@dataclass
class TestAccount:
    id: uuid.UUID
    key: str
    key_id: uuid.UUID

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def new_account(client: httpx.AsyncClient) -> TestAccount:
    response = await client.post(
        "/v1/admin/accounts", json={"email": f"{uuid.uuid4().hex}@example.com"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return TestAccount(
        uuid.UUID(body["account"]["id"]), body["api_key"]["key"], uuid.UUID(body["api_key"]["id"])
    )


async def adjust(
    client: httpx.AsyncClient, account: TestAccount, amount: int, key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        json={"amount": amount, "reason": "test"},
        headers={**ADMIN, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def funded_account(client: httpx.AsyncClient, credits: int) -> TestAccount:
    """A fresh account holding exactly `credits` available (no starter grant)."""
    account = await new_account(client)
    if credits:
        response = await adjust(client, account, credits)
        assert response.status_code == 201, response.text
    return account


@dataclass
class Customer:
    """A funded account with a connected site."""

    account: TestAccount
    site_id: str

    @property
    def auth(self) -> dict[str, str]:
        return self.account.auth

    @property
    def id(self) -> uuid.UUID:
        return self.account.id


async def customer(
    client: httpx.AsyncClient, credits_: int, site_name: str = "Vermont Woodworks"
) -> Customer:
    """`funded_account`, then its first site (which grants the starter credits, if any)."""
    account = await funded_account(client, credits_)
    response = await client.post(
        "/v1/sites",
        json={"framer_project_id": uuid.uuid4().hex, "name": site_name},
        headers=account.auth,
    )
    assert response.status_code == 201, response.text
    return Customer(account, response.json()["id"])
