"""API keys: shown once, stored as a hash, added and revoked; the admin token guards it all."""

import hashlib
import uuid

import pytest
from sqlalchemy import select

from app.accounts.models import ApiKey
from tests.accounts.test_sites import client_for
from tests.conftest import ADMIN, new_account
from tests.test_errors import assert_problem


async def stored_keys(sessionmaker, account_id):
    async with sessionmaker() as session, session.begin():
        return list(
            (await session.execute(select(ApiKey).where(ApiKey.account_id == account_id))).scalars()
        )


async def test_account_creation_returns_a_prefixed_key_once(client, database, sessionmaker):
    email = f"Owner-{uuid.uuid4().hex}@Example.com"
    response = await client.post("/v1/admin/accounts", json={"email": email}, headers=ADMIN)

    assert response.status_code == 201, response.text
    body = response.json()
    key = body["api_key"]["key"]
    assert key.startswith("rfk_")
    assert len(key) > 40
    assert key.startswith(body["api_key"]["prefix"])
    assert body["account"]["email"] == email.lower()
    assert body["account"]["subscription"]["status"] == "trialing"
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})).json()[
        "id"
    ] == body["account"]["id"]
    # Never shown again: the admin view lists keys by prefix only.
    view = await client.get(f"/v1/admin/accounts/{body['account']['id']}", headers=ADMIN)
    assert key not in view.text
    assert [k["prefix"] for k in view.json()["api_keys"]] == [body["api_key"]["prefix"]]


async def test_keys_are_stored_only_as_a_hash(client, database, sessionmaker):
    account = await new_account(client)
    [row] = await stored_keys(sessionmaker, account.id)
    assert row.secret_hash == hashlib.sha256(account.key.encode()).hexdigest()
    stored_values = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert all(account.key not in value for value in stored_values)
    secret_part = account.key.split("_", 2)[2]
    assert all(secret_part not in value for value in stored_values)


async def test_an_added_key_works_beside_the_first(client, database, sessionmaker):
    account = await new_account(client)
    response = await client.post(f"/v1/admin/accounts/{account.id}/api-keys", headers=ADMIN)
    assert response.status_code == 201, response.text
    added = response.json()["api_key"]
    assert added["key"].startswith("rfk_") and added["key"] != account.key
    for key in (account.key, added["key"]):
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert (me.status_code, me.json()["id"]) == (200, str(account.id))
    assert len(await stored_keys(sessionmaker, account.id)) == 2


async def test_a_revoked_key_answers_401_at_once(client, database):
    account = await new_account(client)
    added = (await client.post(f"/v1/admin/accounts/{account.id}/api-keys", headers=ADMIN)).json()[
        "api_key"
    ]
    assert (await client.get("/v1/balance", headers=account.auth)).status_code == 200

    revoked = await client.delete(f"/v1/admin/api-keys/{account.key_id}", headers=ADMIN)

    assert revoked.status_code == 204
    assert_problem(await client.get("/v1/balance", headers=account.auth), 401, "unauthorized")
    assert_problem(
        await client.post(
            "/v1/sites", json={"framer_project_id": "p", "name": "n"}, headers=account.auth
        ),
        401,
        "unauthorized",
    )
    # The account's other key still works, and revoking again changes nothing.
    other = {"Authorization": f"Bearer {added['key']}"}
    assert (await client.get("/v1/balance", headers=other)).status_code == 200
    again = await client.delete(f"/v1/admin/api-keys/{account.key_id}", headers=ADMIN)
    assert again.status_code == 204
    view = (await client.get(f"/v1/admin/accounts/{account.id}", headers=ADMIN)).json()
    revoked_at = {k["id"]: k["revoked_at"] for k in view["api_keys"]}
    assert revoked_at[str(account.key_id)] is not None
    assert revoked_at[added["id"]] is None


async def test_a_key_with_a_valid_prefix_but_wrong_secret_is_401(client, database):
    account = await new_account(client)
    forged = account.key[:-4] + ("AAAA" if not account.key.endswith("AAAA") else "BBBB")
    response = await client.get("/v1/balance", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "unauthorized")


ADMIN_REQUESTS = [
    ("POST", "/v1/admin/accounts", {"email": "x@example.com"}),
    ("GET", "/v1/admin/accounts/{id}", None),
    ("POST", "/v1/admin/accounts/{id}/api-keys", None),
    ("DELETE", "/v1/admin/api-keys/{key_id}", None),
    ("GET", "/v1/admin/accounts/{id}/ledger", None),
    ("POST", "/v1/admin/accounts/{id}/adjustments", {"amount": 5, "reason": "x"}),
]


@pytest.mark.parametrize(("method", "path", "payload"), ADMIN_REQUESTS)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Bearer " + "x" * 49, "account-key"]
)
async def test_admin_endpoints_refuse_a_missing_or_wrong_token(
    client, database, sessionmaker, method, path, payload, authorization
):
    account = await new_account(client)
    if authorization == "account-key":
        headers = account.auth
    else:
        headers = {"Authorization": authorization} if authorization else {}
    response = await client.request(
        method,
        path.format(id=account.id, key_id=account.key_id),
        json=payload,
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert_problem(response, 401, "unauthorized")
    [key] = await stored_keys(sessionmaker, account.id)
    assert key.revoked_at is None
    assert (await client.get("/v1/balance", headers=account.auth)).json()["available"] == 0


@pytest.mark.parametrize(("method", "path", "payload"), ADMIN_REQUESTS)
async def test_admin_endpoints_answer_401_when_admin_token_is_unset(
    client, database, method, path, payload
):
    account = await new_account(client)
    async with client_for(database, admin_token=None) as unconfigured:
        for headers in ({}, ADMIN, {"Authorization": "Bearer "}):
            response = await unconfigured.request(
                method,
                path.format(id=account.id, key_id=account.key_id),
                json=payload,
                headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
            )
            body = assert_problem(response, 401, "unauthorized")
            assert "ADMIN_TOKEN" in body["detail"]
        # Account endpoints are unaffected.
        assert (await unconfigured.get("/v1/balance", headers=account.auth)).status_code == 200
