from tests.conftest import funded_account


async def test_balance_badge_reads_the_funded_amount(client, database):
    account = await funded_account(client, 60_498)
    response = await client.get("/v1/balance", headers=account.auth)
    assert response.status_code == 200
    assert response.json()["display"] == "60,498 Credits"
    assert response.headers["cache-control"] == "no-store"
