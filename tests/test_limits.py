"""CORS for the Framer plugin and request body limits."""

import pytest

from app.limits import TokenBucketLimiter
from tests.apps import app_client
from tests.conftest import ADMIN, make_settings, new_account

PLUGIN = "abc123xyz"


@pytest.fixture(scope="module")
async def cors_client(database):
    async with app_client(make_settings(database, framer_plugin_id=PLUGIN)) as c:
        yield c


@pytest.mark.parametrize(
    "origin",
    [f"https://{PLUGIN}.plugins.framercdn.com", f"https://{PLUGIN}-v42.plugins.framercdn.com"],
)
async def test_plugin_origins_may_send_the_authorization_header(cors_client, origin):
    response = await cors_client.options(
        "/v1/balance",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        f"https://{PLUGIN}.plugins.framercdn.com.evil.example",
        f"https://other{PLUGIN}.plugins.framercdn.com",
        "http://localhost:5173",
    ],
)
async def test_other_origins_get_no_cors_headers(cors_client, origin):
    preflight = await cors_client.options(
        "/v1/balance",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = await cors_client.get("/healthz", headers={"Origin": origin})
    assert "access-control-allow-origin" not in simple.headers


async def test_localhost_is_allowed_only_with_the_dev_setting(database):
    async with app_client(make_settings(database, cors_allow_localhost=True)) as c:
        response = await c.get("/healthz", headers={"Origin": "http://localhost:5173"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_without_plugin_id_no_origin_is_allowed(client):
    response = await client.get(
        "/healthz", headers={"Origin": f"https://{PLUGIN}.plugins.framercdn.com"}
    )
    assert "access-control-allow-origin" not in response.headers


async def test_oversized_body_is_413_and_changes_nothing(client):
    account = await new_account(client)
    big = {"framer_project_id": "p", "name": "x" * 2_000_000}
    response = await client.post("/v1/sites", json=big, headers=account.auth)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"
    sites = await client.get("/v1/sites", headers=account.auth)
    assert sites.json()["sites"] == []
    balance = await client.get("/v1/balance", headers=account.auth)
    assert balance.json()["available"] == 0


async def test_oversized_chunked_body_without_length_is_413(client):
    account = await new_account(client)

    async def chunks():
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        "/v1/admin/accounts",
        content=chunks(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    balance = await client.get("/v1/balance", headers=account.auth)
    assert balance.status_code == 200


def test_token_bucket_allows_the_burst_then_refills_at_the_rate():
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0  # buckets are per key
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


@pytest.mark.parametrize("live_key", [True, False])
async def test_the_badge_carries_cors_headers_once_for_the_plugin_only(cors_client, live_key):
    """The badge's fast lane (PostgreSQL) and the route (SQLite, or any key the lane does
    not answer) apply the same CORS rules, once."""
    account = await new_account(cors_client)
    key = account.key if live_key else account.key + "x"
    origin = f"https://{PLUGIN}.plugins.framercdn.com"
    response = await cors_client.get(
        "/v1/balance", headers={"Authorization": f"Bearer {key}", "Origin": origin}
    )
    assert response.status_code == (200 if live_key else 401)
    assert response.headers.get_list("access-control-allow-origin") == [origin]
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    assert response.headers.get_list("vary") == ["Origin"]
    assert len(response.headers.get_list("x-request-id")) == 1
    evil = await cors_client.get(
        "/v1/balance", headers={"Authorization": f"Bearer {key}", "Origin": "https://evil.example"}
    )
    assert evil.status_code == response.status_code
    assert "access-control-allow-origin" not in evil.headers
