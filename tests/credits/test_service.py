"""The ledger service: holds, settled changes and the append-only ledger, on both databases."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.credits import service
from app.credits.service import (
    HoldOutcome,
    InsufficientCredits,
    InsufficientCreditsToTake,
    UnknownHold,
)
from app.credits.sweeper import sweep_once
from tests.credits.ledger_helpers import TTL, balance, entries, funded, hold, mismatches_for


async def reserve(sessionmaker, account_id, amount, *, ttl=TTL, reference="test"):
    async with sessionmaker() as session, session.begin():
        return await service.reserve(session, account_id, amount, ttl=ttl, reference=reference)


async def settle(sessionmaker, hold_id, used, **kwargs):
    async with sessionmaker() as session, session.begin():
        return await service.settle(session, hold_id, used, description="generation", **kwargs)


async def release(sessionmaker, hold_id, **kwargs):
    async with sessionmaker() as session, session.begin():
        return await service.release(session, hold_id, **kwargs)


# --- reserve ---


async def test_reserve_moves_credits_from_available_to_reserved(sessionmaker):
    account_id = await funded(sessionmaker, 10)

    held = await reserve(sessionmaker, account_id, 3, reference="generation:abc")

    assert (await balance(sessionmaker, account_id)) == service.Balance(7, 3)
    stored = await hold(sessionmaker, held.id)
    assert (stored.status, stored.amount, stored.consumed, stored.reference) == (
        "open",
        3,
        0,
        "generation:abc",
    )
    assert stored.expires_at - stored.created_at == TTL
    # A hold is not a settled change: the ledger still has only the funding entry.
    assert [(e.type, e.amount) for e in await entries(sessionmaker, account_id)] == [
        ("adjustment", 10)
    ]
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_reserve_beyond_available_fails_and_changes_nothing(sessionmaker):
    account_id = await funded(sessionmaker, 5)
    await reserve(sessionmaker, account_id, 2)

    with pytest.raises(InsufficientCredits) as raised:
        await reserve(sessionmaker, account_id, 4)

    assert raised.value.status == 402
    assert raised.value.code == "insufficient_credits"
    assert raised.value.extra == {"needed": 4, "available": 3}
    assert (await balance(sessionmaker, account_id)) == service.Balance(3, 2)
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_reserve_exactly_the_available_credits_leaves_zero(sessionmaker):
    account_id = await funded(sessionmaker, 4)
    await reserve(sessionmaker, account_id, 4)
    assert (await balance(sessionmaker, account_id)) == service.Balance(0, 4)


@pytest.mark.parametrize("amount", [0, -1])
async def test_reserve_refuses_a_non_positive_amount(sessionmaker, amount):
    account_id = await funded(sessionmaker, 4)
    with pytest.raises(ValueError):
        await reserve(sessionmaker, account_id, amount)
    assert (await balance(sessionmaker, account_id)) == service.Balance(4, 0)


async def test_reserve_many_holds_all_items_at_once(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    async with sessionmaker() as session, session.begin():
        holds = await service.reserve_many(
            session, account_id, [1, 1, 1], ttl=TTL, references=["b:0", "b:1", "b:2"]
        )
    assert [h.reference for h in holds] == ["b:0", "b:1", "b:2"]
    assert len({h.id for h in holds}) == 3
    assert (await balance(sessionmaker, account_id)) == service.Balance(7, 3)
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_reserve_many_is_all_or_nothing(sessionmaker):
    account_id = await funded(sessionmaker, 2)
    with pytest.raises(InsufficientCredits) as raised:
        async with sessionmaker() as session, session.begin():
            await service.reserve_many(
                session, account_id, [1, 1, 1], ttl=TTL, references=["b:0", "b:1", "b:2"]
            )
    assert raised.value.extra == {"needed": 3, "available": 2}
    assert (await balance(sessionmaker, account_id)) == service.Balance(2, 0)
    async with sessionmaker() as session, session.begin():
        count = await session.scalar(
            text("SELECT count(*) FROM credit_hold WHERE account_id = :a").bindparams(
                bindparam("a", type_=Uuid)
            ),
            {"a": account_id},
        )
    assert count == 0


# --- settle ---


async def test_settle_charges_what_was_used_and_returns_the_rest(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 3)
    generation_id, batch_id = uuid.uuid4(), uuid.uuid4()

    result = await settle(sessionmaker, held.id, 2, generation_id=generation_id, batch_id=batch_id)

    assert (result.outcome, result.status, result.consumed) == (HoldOutcome.SETTLED, "settled", 2)
    assert result.changed
    assert (await balance(sessionmaker, account_id)) == service.Balance(8, 0)
    ledger = await entries(sessionmaker, account_id)
    assert [(e.type, e.amount, e.balance_after) for e in ledger] == [
        ("adjustment", 10, 10),
        ("consumption", -2, 8),
    ]
    consumption = ledger[-1]
    assert consumption.id == result.entry.id
    assert (consumption.hold_id, consumption.generation_id, consumption.batch_id) == (
        held.id,
        generation_id,
        batch_id,
    )
    assert consumption.description == "generation"
    stored = await hold(sessionmaker, held.id)
    assert (stored.status, stored.consumed) == ("settled", 2)
    assert stored.resolved_at is not None
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_settle_of_all_the_hold_leaves_available_as_after_the_reserve(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 1)
    await settle(sessionmaker, held.id, 1)
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 0)
    assert [(e.type, e.amount, e.balance_after) for e in await entries(sessionmaker, account_id)][
        -1
    ] == ("consumption", -1, 9)


async def test_settle_of_nothing_used_writes_no_entry(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 2)

    result = await settle(sessionmaker, held.id, 0)

    assert (result.outcome, result.consumed, result.entry) == (HoldOutcome.SETTLED, 0, None)
    assert (await balance(sessionmaker, account_id)) == service.Balance(10, 0)
    assert [e.type for e in await entries(sessionmaker, account_id)] == ["adjustment"]
    assert (await hold(sessionmaker, held.id)).status == "settled"


@pytest.mark.parametrize("used", [-1, 3])
async def test_settle_refuses_more_than_the_hold_or_less_than_nothing(sessionmaker, used):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 2)
    with pytest.raises(ValueError):
        await settle(sessionmaker, held.id, used)
    assert (await balance(sessionmaker, account_id)) == service.Balance(8, 2)
    assert (await hold(sessionmaker, held.id)).status == "open"


async def test_settle_after_expiry_releases_and_charges_nothing(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 3)

    result = await settle(sessionmaker, held.id, 3, now=held.expires_at + timedelta(seconds=1))

    assert (result.outcome, result.status, result.consumed, result.entry) == (
        HoldOutcome.EXPIRED,
        "expired",
        0,
        None,
    )
    assert result.changed
    assert (await balance(sessionmaker, account_id)) == service.Balance(10, 0)
    assert [e.type for e in await entries(sessionmaker, account_id)] == ["adjustment"]
    assert (await hold(sessionmaker, held.id)).status == "expired"
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_settle_of_an_unknown_hold_raises(sessionmaker):
    with pytest.raises(UnknownHold):
        await settle(sessionmaker, uuid.uuid4(), 1)


# --- release ---


async def test_release_returns_every_held_credit(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 4)

    result = await release(sessionmaker, held.id)

    assert (result.outcome, result.status, result.consumed) == (
        HoldOutcome.RELEASED,
        "released",
        0,
    )
    assert (await balance(sessionmaker, account_id)) == service.Balance(10, 0)
    assert [e.type for e in await entries(sessionmaker, account_id)] == ["adjustment"]
    stored = await hold(sessionmaker, held.id)
    assert (stored.status, stored.consumed) == ("released", 0)
    assert stored.resolved_at is not None
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_release_many_releases_the_open_holds_and_reports_the_rest(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    first = await reserve(sessionmaker, account_id, 1)
    second = await reserve(sessionmaker, account_id, 2)
    third = await reserve(sessionmaker, account_id, 3)
    await settle(sessionmaker, first.id, 1)

    async with sessionmaker() as session, session.begin():
        results = await service.release_many(session, [first.id, second.id, third.id])

    outcomes = {r.hold_id: (r.outcome, r.status, r.consumed) for r in results}
    assert outcomes == {
        first.id: (HoldOutcome.ALREADY_RESOLVED, "settled", 1),
        second.id: (HoldOutcome.RELEASED, "released", 0),
        third.id: (HoldOutcome.RELEASED, "released", 0),
    }
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 0)
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_release_of_an_unknown_hold_raises(sessionmaker):
    with pytest.raises(UnknownHold):
        await release(sessionmaker, uuid.uuid4())


# --- double resolution ---


@pytest.mark.parametrize(
    ("first", "second", "final_status", "final_available"),
    [
        ("settle", "settle", "settled", 8),
        ("settle", "release", "settled", 8),
        ("release", "settle", "released", 10),
        ("release", "release", "released", 10),
        ("expire", "settle", "expired", 10),
        ("expire", "release", "expired", 10),
    ],
)
async def test_a_hold_resolves_exactly_once(
    sessionmaker, first, second, final_status, final_available
):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 2)

    async def resolve(how):
        if how == "settle":
            return await settle(sessionmaker, held.id, 2)
        if how == "release":
            return await release(sessionmaker, held.id)
        async with sessionmaker() as session, session.begin():
            await service.expire_due(session, now=held.expires_at)
        return None

    await resolve(first)
    ledger_before = [(e.id, e.amount) for e in await entries(sessionmaker, account_id)]

    again = await resolve(second)

    assert again.outcome is HoldOutcome.ALREADY_RESOLVED
    assert not again.changed
    assert again.status == final_status
    assert (await balance(sessionmaker, account_id)) == service.Balance(final_available, 0)
    assert [(e.id, e.amount) for e in await entries(sessionmaker, account_id)] == ledger_before
    assert (await hold(sessionmaker, held.id)).status == final_status
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_a_second_settle_reports_the_first_consumption(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 3)
    await settle(sessionmaker, held.id, 1)
    again = await settle(sessionmaker, held.id, 3)
    assert (again.outcome, again.consumed, again.entry) == (
        HoldOutcome.ALREADY_RESOLVED,
        1,
        None,
    )
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 0)


# --- expiry ---


async def test_expire_due_releases_only_holds_past_their_expiry(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    short = await reserve(sessionmaker, account_id, 1, ttl=timedelta(seconds=10))
    long = await reserve(sessionmaker, account_id, 2, ttl=timedelta(hours=1))
    settled = await reserve(sessionmaker, account_id, 3, ttl=timedelta(seconds=10))
    await settle(sessionmaker, settled.id, 3)

    async with sessionmaker() as session, session.begin():
        expired = await service.expire_due(session, now=short.expires_at + timedelta(seconds=1))

    # Other tests' holds may be due at that time too; ours are told apart by status.
    assert expired >= 1
    assert (await hold(sessionmaker, short.id)).status == "expired"
    assert (await hold(sessionmaker, long.id)).status == "open"
    assert (await hold(sessionmaker, settled.id)).status == "settled"
    assert (await balance(sessionmaker, account_id)) == service.Balance(5, 2)
    assert [(e.type, e.amount) for e in await entries(sessionmaker, account_id)] == [
        ("adjustment", 10),
        ("consumption", -3),
    ]
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_sweep_once_releases_due_holds_and_leaves_live_ones(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    due = await reserve(sessionmaker, account_id, 4, ttl=timedelta(microseconds=1))
    live = await reserve(sessionmaker, account_id, 1, ttl=timedelta(hours=1))

    released = await sweep_once(sessionmaker)

    assert released >= 1
    assert (await hold(sessionmaker, due.id)).status == "expired"
    assert (await hold(sessionmaker, live.id)).status == "open"
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 1)
    assert await sweep_once(sessionmaker) == 0
    assert (await balance(sessionmaker, account_id)) == service.Balance(9, 1)


async def test_sweep_once_works_through_more_due_holds_than_one_batch(sessionmaker):
    account_id = await funded(sessionmaker, 7)
    async with sessionmaker() as session, session.begin():
        holds = await service.reserve_many(
            session,
            account_id,
            [1] * 7,
            ttl=timedelta(microseconds=1),
            references=[f"b:{i}" for i in range(7)],
        )
    released = await sweep_once(sessionmaker, limit=3)
    assert released >= 7
    assert {(await hold(sessionmaker, h.id)).status for h in holds} == {"expired"}
    assert (await balance(sessionmaker, account_id)) == service.Balance(7, 0)


async def test_keep_alive_keeps_a_live_hold_open_past_its_first_expiry(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 2, ttl=timedelta(seconds=30))
    async with sessionmaker() as session, session.begin():
        alive = await service.keep_alive(session, [held.id], ttl=timedelta(hours=1))
    assert alive == [held.id]

    async with sessionmaker() as session, session.begin():
        await service.expire_due(session, now=held.expires_at + timedelta(seconds=1))
    assert (await hold(sessionmaker, held.id)).status == "open"
    result = await settle(sessionmaker, held.id, 2, now=held.expires_at + timedelta(seconds=1))
    assert result.outcome is HoldOutcome.SETTLED
    assert (await balance(sessionmaker, account_id)) == service.Balance(8, 0)


async def test_keep_alive_does_not_revive_an_expired_hold(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    held = await reserve(sessionmaker, account_id, 2, ttl=timedelta(seconds=30))
    late = held.expires_at + timedelta(seconds=1)

    async with sessionmaker() as session, session.begin():
        alive = await service.keep_alive(session, [held.id], ttl=timedelta(hours=1), now=late)

    assert alive == []
    result = await settle(sessionmaker, held.id, 2, now=late)
    assert result.outcome is HoldOutcome.EXPIRED
    assert (await balance(sessionmaker, account_id)) == service.Balance(10, 0)


# --- grant and take ---


async def test_grant_adds_available_with_one_entry(sessionmaker):
    account_id = await funded(sessionmaker, 0)
    async with sessionmaker() as session, session.begin():
        entry = await service.grant(
            session, account_id, 500, type="starter_grant", description="Starter credits"
        )
    assert (entry.type, entry.amount, entry.balance_after) == ("starter_grant", 500, 500)
    assert (await balance(sessionmaker, account_id)) == service.Balance(500, 0)


async def test_balance_after_counts_reserved_credits(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    await reserve(sessionmaker, account_id, 4)
    async with sessionmaker() as session, session.begin():
        entry = await service.grant(
            session, account_id, 5, type="adjustment", description="goodwill"
        )
    assert entry.balance_after == 15
    assert (await balance(sessionmaker, account_id)) == service.Balance(11, 4)
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_take_removes_available_with_one_negative_entry(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    async with sessionmaker() as session, session.begin():
        entry = await service.take(
            session, account_id, 4, type="adjustment", description="correction"
        )
    assert (entry.type, entry.amount, entry.balance_after) == ("adjustment", -4, 6)
    assert (await balance(sessionmaker, account_id)) == service.Balance(6, 0)


async def test_take_more_than_available_fails_and_changes_nothing(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    await reserve(sessionmaker, account_id, 3)
    with pytest.raises(InsufficientCreditsToTake) as raised:
        async with sessionmaker() as session, session.begin():
            await service.take(session, account_id, 8, type="adjustment", description="x")
    assert (raised.value.status, raised.value.code) == (409, "insufficient_credits")
    assert raised.value.extra == {"needed": 8, "available": 7}
    assert (await balance(sessionmaker, account_id)) == service.Balance(7, 3)
    assert len(await entries(sessionmaker, account_id)) == 1


async def test_take_at_most_available_never_goes_below_zero(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    await reserve(sessionmaker, account_id, 3)
    order_id = f"order_{uuid.uuid4().hex}"
    async with sessionmaker() as session, session.begin():
        entry = await service.take(
            session,
            account_id,
            30,
            type="refund_reversal",
            description="refund",
            at_most_available=True,
            polar_order_id=order_id,
        )
    assert (entry.type, entry.amount, entry.balance_after, entry.polar_order_id) == (
        "refund_reversal",
        -7,
        3,
        order_id,
    )
    assert (await balance(sessionmaker, account_id)) == service.Balance(0, 3)
    async with sessionmaker() as session, session.begin():
        nothing = await service.take(
            session,
            account_id,
            5,
            type="adjustment",
            description="nothing left",
            at_most_available=True,
        )
    assert nothing is None
    assert (await balance(sessionmaker, account_id)) == service.Balance(0, 3)
    assert len(await entries(sessionmaker, account_id)) == 2
    assert await mismatches_for(sessionmaker, account_id) == []


async def test_one_starter_grant_per_account_is_enforced_by_the_database(sessionmaker):
    account_id = await funded(sessionmaker, 0)
    async with sessionmaker() as session, session.begin():
        await service.grant(session, account_id, 500, type="starter_grant", description="s")
    with pytest.raises(DBAPIError):
        async with sessionmaker() as session, session.begin():
            await service.grant(session, account_id, 500, type="starter_grant", description="s")
    assert (await balance(sessionmaker, account_id)) == service.Balance(500, 0)


# --- the ledger is append-only ---


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET amount = 1000 WHERE account_id = :account",
        "UPDATE ledger_entry SET description = 'edited' WHERE account_id = :account",
        "DELETE FROM ledger_entry WHERE account_id = :account",
    ],
)
async def test_the_database_refuses_to_change_or_delete_ledger_entries(sessionmaker, statement):
    account_id = await funded(sessionmaker, 10)
    with pytest.raises(DBAPIError, match="append-only"):
        async with sessionmaker() as session, session.begin():
            await session.execute(
                text(statement).bindparams(bindparam("account", type_=Uuid)),
                {"account": account_id},
            )
    ledger = await entries(sessionmaker, account_id)
    assert [(e.type, e.amount, e.description) for e in ledger] == [("adjustment", 10, "funding")]


@pytest.mark.parametrize("column", ["available", "reserved"])
async def test_the_database_refuses_a_negative_balance(sessionmaker, column):
    account_id = await funded(sessionmaker, 3)
    statement = text(
        f"UPDATE credit_balance SET {column} = {column} - 4 WHERE account_id = :account"
    ).bindparams(bindparam("account", type_=Uuid))
    with pytest.raises(IntegrityError):
        async with sessionmaker() as session, session.begin():
            await session.execute(statement, {"account": account_id})
    assert (await balance(sessionmaker, account_id)) == service.Balance(3, 0)


async def test_keep_alive_extends_only_holds_that_are_open_and_not_yet_expired(sessionmaker):
    account_id = await funded(sessionmaker, 10)
    live = await reserve(sessionmaker, account_id, 1, reference="live")
    late = await reserve(sessionmaker, account_id, 1, ttl=timedelta(seconds=1), reference="late")
    done = await reserve(sessionmaker, account_id, 1, reference="done")
    await release(sessionmaker, done.id)
    now = (await hold(sessionmaker, late.id)).expires_at + timedelta(seconds=1)
    unknown = uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        alive = await service.keep_alive(
            session, [done.id, unknown, late.id, live.id], ttl=timedelta(hours=2), now=now
        )
    assert alive == [live.id]
    assert (await hold(sessionmaker, live.id)).expires_at == now + timedelta(hours=2)
    # Past its expiry it stays expired (the sweeper releases it); released stays released.
    assert (await hold(sessionmaker, late.id)).expires_at == now - timedelta(seconds=1)
    released = await hold(sessionmaker, done.id)
    assert released.status == "released" and released.expires_at < now + timedelta(hours=1)
    assert (await balance(sessionmaker, account_id)) == service.Balance(8, 2)
