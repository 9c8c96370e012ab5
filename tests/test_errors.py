"""Whatever a client sends, the answer is a problem+json 4xx that changes nothing, never a 500."""

import asyncio
import base64
import json
import re
import uuid

import pytest

from tests.apps import asgi_client
from tests.conftest import ADMIN, funded_account, new_account

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


def assert_problem(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"].endswith(code)
    assert body["title"] and body["detail"]
    return body


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_unknown_route_is_a_problem_404(client):
    assert_problem(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_every_404_has_the_same_title(client):
    account = await new_account(client)
    missing = uuid.uuid4()
    answers = [
        await client.get("/v1/nothing-here"),
        await client.get("/nothing-at-all"),
        await client.get(f"/v1/sites/{missing}", headers=account.auth),
        await client.delete(f"/v1/sites/{missing}", headers=account.auth),
        await client.get(f"/v1/generations/{missing}", headers=account.auth),
        await client.get(f"/v1/generation-batches/{missing}", headers=account.auth),
        await client.get(f"/v1/generation-batches/{missing}/events", headers=account.auth),
        await client.post(f"/v1/generation-batches/{missing}/cancel", headers=account.auth),
        await client.get(f"/v1/purchase-intents/{missing}", headers=account.auth),
        await client.get(f"/v1/admin/accounts/{missing}", headers=ADMIN),
        await client.delete(f"/v1/admin/api-keys/{missing}", headers=ADMIN),
    ]
    bodies = [assert_problem(answer, 404, "not_found") for answer in answers]
    assert {body["title"] for body in bodies} == {"Not found"}


async def test_wrong_method_is_a_problem_405(client):
    response = await client.put("/v1/balance")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_missing_credentials_are_a_problem_401(client):
    response = await client.get("/v1/balance")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nonsense",
        "Bearer rfk_",
        "Bearer rfk__x",
        "Bearer rfk_0123456789abcdef",
        "Bearer rfk_0123456789abcdef_wrong",
        "Bearer rfk_" + "a" * 40 + "_x",
        "Bearer rfk_\u00e9\u00e9_x".encode("latin-1"),
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "",
    ],
)
async def test_malformed_or_unknown_keys_are_401(client, database, authorization):
    response = await client.get("/v1/balance", headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthorized")


async def test_malformed_json_is_a_validation_error(client, database):
    account = await new_account(client)
    response = await client.post(
        "/v1/sites",
        content=b'{"framer_project_id": "p", "name": ',
        headers={**account.auth, "Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"]


async def test_a_body_that_is_not_an_object_is_a_validation_error(client, database):
    account = await new_account(client)
    for payload in ([1, 2], "text", 3, None):
        response = await client.post("/v1/sites", json=payload, headers=account.auth)
        assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(
    "payload",
    [
        {"framer_project_id": 123, "name": "x"},
        {"framer_project_id": "p", "name": ["x"]},
        {"framer_project_id": "", "name": "x"},
        {"framer_project_id": "   ", "name": "x"},
        {"framer_project_id": "p" * 201, "name": "x"},
        {"framer_project_id": "p\u0000q", "name": "x"},
        {"framer_project_id": "p", "name": "nul\u0000byte"},
        {"framer_project_id": "p", "name": "lone \ud800 surrogate"},
        {"name": "x"},
    ],
)
async def test_wrong_site_fields_are_validation_errors_that_change_nothing(
    client, database, payload
):
    account = await new_account(client)
    # Encoded by hand: JSON may carry what Python's encoder refuses (a lone surrogate).
    response = await client.post(
        "/v1/sites",
        content=json.dumps(payload).encode(),
        headers={**account.auth, "Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] and all({"loc", "msg", "type"} <= e.keys() for e in body["errors"])
    sites = await client.get("/v1/sites", headers=account.auth)
    assert sites.json() == {"sites": []}
    assert (await client.get("/v1/balance", headers=account.auth)).json()["available"] == 0


@pytest.mark.parametrize(
    "payload",
    [
        b'{"amount": 1000000000000000000000000000000, "reason": "huge"}',
        b'{"amount": -1000000000000000000000000000000, "reason": "huge"}',
        b'{"amount": 1e400, "reason": "infinite"}',
        b'{"amount": 1.5, "reason": "fraction"}',
        b'{"amount": 5.5, "reason": "fraction"}',
        b'{"amount": "5", "reason": "text"}',
        b'{"amount": true, "reason": "bool"}',
        b'{"amount": null, "reason": "null"}',
        b'{"amount": 5, "reason": "nul\\u0000byte"}',
        b'{"amount": 5, "reason": "lone \\ud800 surrogate"}',
        b'{"amount": 5, "reason": ["list"]}',
        b'{"amount": 5}',
        b'{"amount": 5, "reason": "' + b"x" * 501 + b'"}',
    ],
)
async def test_wrong_adjustments_are_validation_errors_that_change_nothing(
    client, database, payload
):
    account = await funded_account(client, 3)
    response = await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        content=payload,
        headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    assert (await client.get("/v1/balance", headers=account.auth)).json()["available"] == 3
    ledger = await client.get(f"/v1/admin/accounts/{account.id}/ledger", headers=ADMIN)
    assert len(ledger.json()["entries"]) == 1


async def test_a_number_too_long_to_parse_is_a_client_error(client, database):
    account = await funded_account(client, 3)
    response = await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        content=b'{"amount": ' + b"9" * 5000 + b', "reason": "x"}',
        headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/balance", headers=account.auth)).json()["available"] == 3


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/sites/not-a-uuid"),
        ("GET", "/v1/sites/12345"),
        ("GET", "/v1/admin/accounts/not-a-uuid"),
        ("GET", "/v1/admin/accounts/not-a-uuid/ledger"),
        ("POST", "/v1/admin/accounts/not-a-uuid/api-keys"),
        ("DELETE", "/v1/admin/api-keys/not-a-uuid"),
    ],
)
async def test_non_uuid_ids_are_validation_errors(client, database, method, path):
    account = await new_account(client)
    headers = ADMIN if "/admin/" in path else account.auth
    response = await client.request(method, path, headers=headers)
    assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=99999999999999999999999999",
        "cursor=%%%",
        "cursor=" + "A" * 65,
        "cursor=" + cursor_of("x1"),
        "cursor=" + cursor_of("s-5"),
        "cursor=" + cursor_of("s" + "9" * 40),
        "cursor=" + cursor_of("s99999999999999999999"),
        "cursor=" + cursor_of("s9223372036854775808"),
        "cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_bad_ledger_queries_are_validation_errors(client, database, query):
    account = await funded_account(client, 3)
    response = await client.get(f"/v1/ledger?{query}", headers=account.auth)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"]


@pytest.mark.parametrize(
    "query",
    ["pages=-1", "images=-1", "pages=1e3", "pages=10000000000000000000000", "schema=maybe"],
)
async def test_bad_estimate_queries_are_validation_errors(client, database, query):
    account = await new_account(client)
    response = await client.get(f"/v1/estimate?{query}", headers=account.auth)
    assert_problem(response, 422, "validation_error")


async def test_unknown_account_ids_are_404_for_admin(client, database):
    missing = uuid.uuid4()
    assert_problem(
        await client.get(f"/v1/admin/accounts/{missing}", headers=ADMIN), 404, "not_found"
    )
    assert_problem(
        await client.get(f"/v1/admin/accounts/{missing}/ledger", headers=ADMIN), 404, "not_found"
    )
    assert_problem(
        await client.post(f"/v1/admin/accounts/{missing}/api-keys", headers=ADMIN),
        404,
        "not_found",
    )
    assert_problem(
        await client.delete(f"/v1/admin/api-keys/{missing}", headers=ADMIN), 404, "not_found"
    )
    response = await client.post(
        f"/v1/admin/accounts/{missing}/adjustments",
        json={"amount": 5, "reason": "x"},
        headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    "email", ["not-an-email", "", "a@b", "x" * 400 + "@example.com", "nul\u0000@example.com"]
)
async def test_bad_emails_are_validation_errors(client, database, email):
    response = await client.post("/v1/admin/accounts", json={"email": email}, headers=ADMIN)
    assert_problem(response, 422, "validation_error")


async def test_a_taken_email_is_a_conflict(client, database):
    email = f"{uuid.uuid4().hex}@example.com"
    first = await client.post("/v1/admin/accounts", json={"email": email}, headers=ADMIN)
    assert first.status_code == 201
    again = await client.post("/v1/admin/accounts", json={"email": email.upper()}, headers=ADMIN)
    assert_problem(again, 409, "email_taken")


@pytest.mark.parametrize(
    "raw",
    [b'{"email": "a\\ud800@example.com"}', b'{"email": "\\u0000"}', b'{"email": 5}', b"{}"],
)
async def test_odd_emails_are_validation_errors(client, database, raw):
    response = await client.post(
        "/v1/admin/accounts",
        content=raw,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")


async def test_racing_creates_of_one_email_make_one_account(client, database):
    email = f"{uuid.uuid4().hex}@example.com"
    responses = await asyncio.gather(
        *(
            client.post("/v1/admin/accounts", json={"email": email}, headers=ADMIN)
            for _ in range(10)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        # White space only where JSON Schema's regular expressions and Python agree:
        ("\u001d", 201),  # Python's str.isspace says space, JSON Schema's \s does not
        ("\u0085", 201),
        ("\ufeff", 201),  # JSON Schema's \s says space, Python's does not
        (" \u3000\t\n\u2028", 422),
        ("  spaced  ", 201),
    ],
)
async def test_blank_means_what_the_published_schema_says(client, database, reason, status):
    account = await funded_account(client, 3)
    response = await client.post(
        f"/v1/admin/accounts/{account.id}/adjustments",
        json={"amount": 1, "reason": reason},
        headers={**ADMIN, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == status, response.text
    if status == 201:
        assert response.json()["description"] == f"Adjustment: {reason.strip(' ')}"
    site = await client.post(
        "/v1/sites", json={"framer_project_id": reason, "name": reason}, headers=account.auth
    )
    assert site.status_code == status, site.text


async def test_every_driver_level_failure_is_a_503_database_unavailable(settings):
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    from app.main import create_app

    failures = {
        "state": asyncpg.InternalClientError("cannot switch to state 15"),
        "gone": asyncpg.ConnectionDoesNotExistError("connection was closed"),
        "interface": asyncpg.InterfaceError("connection is closed"),
        "os": OSError(113, "No route to host"),
        "wrapped": DBAPIError(
            "SELECT 1", {}, asyncpg.ConnectionDoesNotExistError("closed mid-operation")
        ),
    }
    application = create_app(settings)

    @application.get("/test-failure/{name}")
    async def fail(name: str) -> None:
        raise failures[name]

    async with asgi_client(application, raise_app_exceptions=False) as c:
        for name in failures:
            body = assert_problem(await c.get(f"/test-failure/{name}"), 503, "database_unavailable")
            assert "nothing was changed" not in body["detail"]
        # A bug is still a bug: 500, as problem+json.
        failures["state"] = ValueError("a bug")
        assert_problem(await c.get("/test-failure/state"), 500, "internal_error")


async def test_docs_load_every_asset_from_this_server(client):
    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, html
        for asset in assets:
            assert asset.startswith("/docs/assets/"), asset  # never a CDN
            fetched = await client.get(asset)
            assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
        assert "'/openapi.json'" in html or '"/openapi.json"' in html
        assert not re.findall(r"https?://", html)
