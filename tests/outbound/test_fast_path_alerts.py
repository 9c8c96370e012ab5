"""The single generation's one-statement reserve never crosses the alert threshold itself:
it leaves that reserve to the ORM path, which judges it and records the event in its
transaction; reserves that cross nothing stay on the fast path."""

import pytest
from sqlalchemy import select

from app.outbound.models import OutboundEvent
from tests.generation.conftest import fake_anthropic
from tests.generation.test_fast_path import customer, load_account, pg, reserve_fast

__all__ = ["fake_anthropic", "pg"]  # the fast-path tests' fixtures


async def events_of(sessionmaker, account_id) -> list[str]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(OutboundEvent.type)
            .where(OutboundEvent.account_id == account_id)
            .order_by(OutboundEvent.created_at)
        )
        return list(rows.scalars())


@pytest.mark.parametrize("threshold", [3])
async def test_the_fast_reserve_refuses_a_crossing_and_the_orm_path_records_it(pg, threshold):
    application, client, sessionmaker = pg
    who = await customer(client, 4)
    put = await client.put(
        "/v1/alert-settings", json={"low_balance_threshold": threshold}, headers=who.auth
    )
    assert put.status_code == 200
    account = await load_account(sessionmaker, who.id)

    assert await reserve_fast(application, account, who.site_id) is not None  # 4 -> 3: ok
    assert await reserve_fast(application, account, who.site_id) is None  # 3 -> 2 crosses
    assert await events_of(sessionmaker, who.id) == []  # it changed nothing

    body = {"kind": "meta_title", "site_id": who.site_id, "input": {"page_content": "Oak."}}
    made = await client.post("/v1/generations", json=body, headers=who.auth)
    assert made.status_code in (201, 502), made.text  # the ORM path reserved and judged
    assert await events_of(sessionmaker, who.id) == ["balance.low"]

    # Low now: the next reserve crosses nothing and takes the fast path again.
    assert await reserve_fast(application, account, who.site_id) is not None
    assert await events_of(sessionmaker, who.id) == ["balance.low"]
