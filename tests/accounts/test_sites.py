"""Sites, and the starter credits the first one grants: once per account, whatever happens."""

import asyncio
import contextlib
import uuid

import pytest

from tests.apps import app_client
from tests.conftest import ADMIN, make_settings, new_account
from tests.test_errors import assert_problem


async def connect(client, account, project_id, name="My site"):
    return await client.post(
        "/v1/sites", json={"framer_project_id": project_id, "name": name}, headers=account.auth
    )


async def balance_and_ledger(client, account):
    balance = (await client.get("/v1/balance", headers=account.auth)).json()
    ledger = (await client.get("/v1/ledger?limit=200", headers=account.auth)).json()["entries"]
    return balance, ledger


@contextlib.asynccontextmanager
async def client_for(database, **settings):
    async with app_client(make_settings(database, **settings)) as c:
        yield c


async def test_the_first_site_grants_the_starter_credits(client, database):
    account = await new_account(client)
    response = await connect(client, account, "proj-1", "Portfolio")

    assert response.status_code == 201, response.text
    site = response.json()
    assert (site["framer_project_id"], site["name"]) == ("proj-1", "Portfolio")
    uuid.UUID(site["id"])
    balance, ledger = await balance_and_ledger(client, account)
    assert (balance["available"], balance["display"]) == (500, "500 Credits")
    assert [(e["type"], e["amount"], e["balance_after"]) for e in ledger] == [
        ("starter_grant", 500, 500)
    ]


async def test_a_known_project_answers_200_with_the_same_site_and_grants_nothing(client, database):
    account = await new_account(client)
    first = await connect(client, account, "proj-1")
    again = await connect(client, account, "proj-1", "Renamed")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    second_site = await connect(client, account, "proj-2")
    assert second_site.status_code == 201
    balance, ledger = await balance_and_ledger(client, account)
    assert balance["available"] == 500
    assert len(ledger) == 1
    sites = (await client.get("/v1/sites", headers=account.auth)).json()["sites"]
    assert [s["framer_project_id"] for s in sites] == ["proj-1", "proj-2"]


@pytest.mark.parametrize("same_project", [True, False], ids=["same-project", "other-projects"])
async def test_starter_credits_once_under_20_racing_first_connects(client, database, same_project):
    account = await new_account(client)

    responses = await asyncio.gather(
        *(connect(client, account, "proj" if same_project else f"proj-{i}") for i in range(20))
    )

    statuses = sorted(r.status_code for r in responses)
    if same_project:
        assert statuses == [200] * 19 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
    else:
        assert statuses == [201] * 20
    balance, ledger = await balance_and_ledger(client, account)
    assert balance["available"] == 500
    assert [e["type"] for e in ledger] == ["starter_grant"]


async def test_removing_every_site_and_connecting_again_grants_nothing_more(client, database):
    account = await new_account(client)
    site = (await connect(client, account, "proj-1")).json()

    removed = await client.delete(f"/v1/sites/{site['id']}", headers=account.auth)
    assert removed.status_code == 204
    assert removed.content == b""
    assert (await client.get("/v1/sites", headers=account.auth)).json() == {"sites": []}
    assert_problem(
        await client.get(f"/v1/sites/{site['id']}", headers=account.auth), 404, "not_found"
    )
    balance, _ = await balance_and_ledger(client, account)
    assert balance["available"] == 500  # credits stay with the account

    responses = await asyncio.gather(
        connect(client, account, "proj-1"), *(connect(client, account, f"p{i}") for i in range(5))
    )
    assert [r.status_code for r in responses] == [201] * 6
    assert responses[0].json()["id"] != site["id"]  # a new site for the same project
    balance, ledger = await balance_and_ledger(client, account)
    assert balance["available"] == 500
    assert [e["type"] for e in ledger] == ["starter_grant"]


async def test_removing_a_site_twice_is_404(client, database):
    account = await new_account(client)
    site = (await connect(client, account, "proj-1")).json()
    assert (await client.delete(f"/v1/sites/{site['id']}", headers=account.auth)).status_code == 204
    assert_problem(
        await client.delete(f"/v1/sites/{site['id']}", headers=account.auth), 404, "not_found"
    )
    assert_problem(
        await client.delete(f"/v1/sites/{uuid.uuid4()}", headers=account.auth), 404, "not_found"
    )


async def test_a_site_can_be_read_by_its_id(client, database):
    account = await new_account(client)
    site = (await connect(client, account, "proj-1")).json()
    response = await client.get(f"/v1/sites/{site['id']}", headers=account.auth)
    assert (response.status_code, response.json()) == (200, site)


async def test_starter_credits_setting_is_honoured(database):
    async with client_for(database, starter_credits=1234) as custom:
        account = await new_account(custom)
        assert (await connect(custom, account, "proj-1")).status_code == 201
        balance, ledger = await balance_and_ledger(custom, account)
    assert balance["display"] == "1,234 Credits"
    assert [(e["type"], e["amount"]) for e in ledger] == [("starter_grant", 1234)]


async def test_zero_starter_credits_grants_nothing_and_not_later_either(database):
    async with client_for(database, starter_credits=0) as stingy:
        account = await new_account(stingy)
        assert (await connect(stingy, account, "proj-1")).status_code == 201
        balance, ledger = await balance_and_ledger(stingy, account)
    assert (balance["available"], ledger) == (0, [])
    async with client_for(database, starter_credits=500) as generous:
        assert (await connect(generous, account, "proj-2")).status_code == 201
        balance, ledger = await balance_and_ledger(generous, account)
    # The account's first site has been connected already: no grant for a later one.
    assert (balance["available"], ledger) == (0, [])


async def test_trial_days_setting_is_honoured(database):
    from datetime import datetime, timedelta

    async with client_for(database, trial_days=14) as custom:
        account = await new_account(custom)
        me = (await custom.get("/v1/me", headers=account.auth)).json()
    trial = datetime.fromisoformat(me["trial_ends_at"]) - datetime.fromisoformat(me["created_at"])
    assert trial == timedelta(days=14)
    assert me["subscription"]["status"] == "trialing"


async def test_sites_need_an_account_key(client, database):
    assert_problem(
        await client.post("/v1/sites", json={"framer_project_id": "p", "name": "n"}),
        401,
        "unauthorized",
    )
    assert_problem(await client.get("/v1/sites", headers=ADMIN), 401, "unauthorized")
