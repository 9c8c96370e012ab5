"""The badge's fast lane on PostgreSQL (`app.credits.fast_lane`): it answers what the
`get_balance` route answers, and hands every other case to the route."""

import json
import uuid

import httpx
import pytest

from app.credits.fast_lane import BalanceFastLane
from tests.apps import asgi_client, running_app
from tests.conftest import ADMIN, funded_account, make_settings
from tests.test_errors import assert_problem
from tests.test_observability import metric


@pytest.fixture(scope="module")
async def pg_app(postgres_database):
    async with running_app(make_settings(postgres_database)) as application:
        yield application


@pytest.fixture(scope="module")
async def pg_client(pg_app):
    async with asgi_client(pg_app) as client:
        yield client


def without_time(response: httpx.Response) -> tuple[int, dict[str, object], dict[str, str]]:
    body = response.json()
    assert body.pop("as_of").endswith("Z")
    headers = {name: response.headers[name] for name in ("content-type", "cache-control")}
    return response.status_code, body, headers


async def test_the_lane_and_the_route_answer_the_same(pg_app, pg_client):
    account = await funded_account(pg_client, 60_498)
    statements = pg_app.state.statements
    assert statements is not None
    laned = await pg_client.get("/v1/balance", headers=account.auth)
    pg_app.state.statements = None  # the lane steps aside: the route answers
    try:
        routed = await pg_client.get("/v1/balance", headers=account.auth)
    finally:
        pg_app.state.statements = statements
    assert without_time(laned) == without_time(routed)
    assert without_time(laned) == (
        200,
        {
            "available": 60_498,
            "reserved": 0,
            "display": "60,498 Credits",
            "usable": True,
            "subscription_status": "trialing",
        },
        {"content-type": "application/json", "cache-control": "no-store"},
    )
    assert laned.headers["x-request-id"] != routed.headers["x-request-id"]


async def test_the_lane_is_counted_and_logged_like_the_route(pg_client, caplog):
    account = await funded_account(pg_client, 5)
    labels = {"method": "GET", "route": "/v1/balance", "status": "200"}
    before = metric(
        (await pg_client.get("/metrics")).text, "rankframe_http_requests_total", **labels
    )
    caplog.set_level("INFO", logger="app.access")
    response = await pg_client.get(
        "/v1/balance", headers={**account.auth, "X-Request-ID": "lane-check-1"}
    )
    assert response.headers["x-request-id"] == "lane-check-1"
    after = metric(
        (await pg_client.get("/metrics")).text, "rankframe_http_requests_total", **labels
    )
    assert after == before + 1
    [line] = [r for r in caplog.records if r.name == "app.access" and r.path == "/v1/balance"]
    assert (line.route, line.status, line.account_id) == ("/v1/balance", 200, str(account.id))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        f"Bearer rfk_{'0' * 16}_{'x' * 43}",  # well formed, unknown
    ],
)
async def test_anything_but_a_live_key_gets_the_routes_401(pg_client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = await pg_client.get("/v1/balance", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_revoked_key_is_refused_by_the_lane_at_once(pg_client):
    account = await funded_account(pg_client, 5)
    assert (await pg_client.get("/v1/balance", headers=account.auth)).status_code == 200
    revoked = await pg_client.delete(f"/v1/admin/api-keys/{account.key_id}", headers=ADMIN)
    assert revoked.status_code == 204
    assert_problem(await pg_client.get("/v1/balance", headers=account.auth), 401, "unauthorized")


async def test_a_wrong_secret_for_a_known_lookup_id_is_refused(pg_client):
    account = await funded_account(pg_client, 5)
    prefix, lookup, _secret = account.key.split("_", 2)
    forged = f"{prefix}_{lookup}_{uuid.uuid4().hex}"
    response = await pg_client.get("/v1/balance", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "unauthorized")


async def test_a_driver_pool_failure_falls_back_to_the_route(postgres_database):
    """A broken driver pool costs the lane, not the answer: the route serves the badge."""
    async with (
        running_app(make_settings(postgres_database)) as application,
        asgi_client(application) as client,
    ):
        account = await funded_account(client, 7)
        application.state.statements.pool.terminate()  # every statement now fails
        response = await client.get("/v1/balance", headers=account.auth)
        # Already terminated: nothing to give back or close at exit.
        application.state.statements = None
    assert response.status_code == 200, response.text
    assert response.json()["available"] == 7


async def test_the_lane_answers_a_live_key_without_the_framework(pg_app, pg_client):
    """Called directly: a live key is answered by the lane alone; an unknown one goes on."""
    account = await funded_account(pg_client, 12)
    passed_on: list[str] = []

    async def framework(scope, receive, send):
        passed_on.append(scope["path"])

    async def answer(authorization: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/balance",
            "headers": [(b"authorization", authorization.encode())],
            "app": pg_app,
        }
        await BalanceFastLane(framework, None)(scope, None, send)
        return sent

    start, body = await answer(f"Bearer {account.key}")
    assert passed_on == []
    assert start["status"] == 200
    assert json.loads(body["body"])["available"] == 12
    assert await answer(f"Bearer {account.key}x") == []
    assert passed_on == ["/v1/balance"]


async def test_a_request_handed_on_is_counted_and_logged_once(pg_client, caplog):
    labels = {"method": "GET", "route": "/v1/balance", "status": "401"}
    text = (await pg_client.get("/metrics")).text
    before = metric(text, "rankframe_http_requests_total", **labels)
    caplog.set_level("INFO", logger="app.access")
    response = await pg_client.get(
        "/v1/balance", headers={"Authorization": f"Bearer rfk_{'1' * 16}_{'y' * 43}"}
    )
    assert response.status_code == 401
    assert len(response.headers.get_list("x-request-id")) == 1
    after = metric(
        (await pg_client.get("/metrics")).text, "rankframe_http_requests_total", **labels
    )
    assert after == before + 1
    lines = [r for r in caplog.records if r.name == "app.access" and r.path == "/v1/balance"]
    assert [(r.route, r.status) for r in lines] == [("/v1/balance", 401)]
