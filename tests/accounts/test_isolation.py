"""Tenant isolation: one account's key never sees or touches another account's data."""

import pytest

from tests.conftest import adjust, new_account
from tests.test_errors import assert_problem


@pytest.fixture
async def two_accounts(client, database):
    alice, bob = await new_account(client), await new_account(client)
    sites = {}
    for owner, project in ((alice, "alice-site"), (bob, "bob-site")):
        response = await client.post(
            "/v1/sites", json={"framer_project_id": project, "name": project}, headers=owner.auth
        )
        assert response.status_code == 201
        sites[project] = response.json()
    assert (await adjust(client, bob, 77)).status_code == 201
    return alice, bob, sites["alice-site"], sites["bob-site"]


async def test_a_key_cannot_read_another_accounts_site(client, two_accounts):
    alice, _, _, bob_site = two_accounts
    response = await client.get(f"/v1/sites/{bob_site['id']}", headers=alice.auth)
    assert_problem(response, 404, "not_found")
    listed = (await client.get("/v1/sites", headers=alice.auth)).json()["sites"]
    assert [s["framer_project_id"] for s in listed] == ["alice-site"]


async def test_a_key_cannot_remove_another_accounts_site(client, two_accounts):
    alice, bob, _, bob_site = two_accounts
    response = await client.delete(f"/v1/sites/{bob_site['id']}", headers=alice.auth)
    assert_problem(response, 404, "not_found")
    still = await client.get(f"/v1/sites/{bob_site['id']}", headers=bob.auth)
    assert (still.status_code, still.json()) == (200, bob_site)


async def test_connecting_another_accounts_project_makes_a_site_of_ones_own(client, two_accounts):
    alice, bob, _, bob_site = two_accounts
    response = await client.post(
        "/v1/sites", json={"framer_project_id": "bob-site", "name": "mine"}, headers=alice.auth
    )
    assert response.status_code == 201
    assert response.json()["id"] != bob_site["id"]
    bobs = (await client.get("/v1/sites", headers=bob.auth)).json()["sites"]
    assert bobs == [bob_site]


async def test_each_key_sees_only_its_own_balance_and_ledger(client, two_accounts):
    alice, bob, _, _ = two_accounts
    alice_balance = (await client.get("/v1/balance", headers=alice.auth)).json()
    bob_balance = (await client.get("/v1/balance", headers=bob.auth)).json()
    assert (alice_balance["available"], bob_balance["available"]) == (500, 577)

    alice_ledger = (await client.get("/v1/ledger", headers=alice.auth)).json()["entries"]
    bob_ledger = (await client.get("/v1/ledger", headers=bob.auth)).json()["entries"]
    assert [(e["type"], e["amount"]) for e in alice_ledger] == [("starter_grant", 500)]
    assert [(e["type"], e["amount"]) for e in bob_ledger] == [
        ("adjustment", 77),
        ("starter_grant", 500),
    ]
    assert not {e["id"] for e in alice_ledger} & {e["id"] for e in bob_ledger}


async def test_another_accounts_cursor_shows_only_ones_own_entries(client, two_accounts):
    alice, bob, _, _ = two_accounts
    first_page = (await client.get("/v1/ledger?limit=1", headers=bob.auth)).json()
    assert first_page["next_cursor"] is not None
    borrowed = await client.get(
        "/v1/ledger", params={"cursor": first_page["next_cursor"]}, headers=alice.auth
    )
    assert borrowed.status_code == 200
    assert all(e["amount"] == 500 for e in borrowed.json()["entries"])
    assert len(borrowed.json()["entries"]) <= 1


async def test_an_account_key_cannot_use_admin_endpoints_on_another_account(client, two_accounts):
    alice, bob, _, _ = two_accounts
    for response in (
        await client.get(f"/v1/admin/accounts/{bob.id}", headers=alice.auth),
        await client.get(f"/v1/admin/accounts/{bob.id}/ledger", headers=alice.auth),
        await client.post(
            f"/v1/admin/accounts/{bob.id}/adjustments",
            json={"amount": -77, "reason": "steal"},
            headers={**alice.auth, "Idempotency-Key": "k"},
        ),
        await client.delete(f"/v1/admin/api-keys/{bob.key_id}", headers=alice.auth),
    ):
        assert_problem(response, 401, "unauthorized")
    assert (await client.get("/v1/balance", headers=bob.auth)).json()["available"] == 577
