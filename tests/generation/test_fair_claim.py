"""The fair claim: round-robin over accounts (the one served longest ago first, a new one
ahead of all), then over an account's batches, the same order on both databases; and on
PostgreSQL concurrent claimers take different items."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from app.accounts.models import Account, Site
from app.config import Settings
from app.db import create_engine, create_sessionmaker, utcnow
from app.generation import queue
from app.generation.models import GenerationBatch, GenerationBatchItem
from tests.conftest import BACKENDS
from tests.databases import create_database, drop_database, migrated_sessionmaker


@pytest.fixture(params=BACKENDS)
async def sessionmaker(request, tmp_path) -> AsyncIterator[object]:
    """A migrated database with no app (so no worker claims anything)."""
    async with migrated_sessionmaker(request.param, tmp_path) as made:
        yield made


@pytest.fixture
async def pg_sessionmaker(tmp_path) -> AsyncIterator[object]:
    async with migrated_sessionmaker("postgres", tmp_path) as made:
        yield made


async def add_batch(session, account_id, site_id, size, *, created_at, last_claimed_at=None):
    batch = GenerationBatch(
        id=uuid.uuid4(),
        account_id=account_id,
        site_id=site_id,
        kind="meta_title",
        status="running" if last_claimed_at else "queued",
        total=size,
        created_at=created_at,
        last_claimed_at=last_claimed_at,
    )
    session.add(batch)
    await session.flush()
    await session.execute(
        insert(GenerationBatchItem),
        [
            {
                "batch_id": batch.id,
                "index": index,
                "input": {"page_content": f"{index}"},
                "status": "queued",
                "hold_id": uuid.uuid4(),
                "credits_charged": 0,
                "attempts": 0,
            }
            for index in range(size)
        ],
    )
    return batch.id


async def add_account(session):
    account = Account(email=f"{uuid.uuid4().hex}@example.com", trial_ends_at=utcnow())
    session.add(account)
    await session.flush()
    site = Site(account_id=account.id, framer_project_id="p", name="s")
    session.add(site)
    await session.flush()
    return account.id, site.id


async def claim(session, limit, token=None):
    now = utcnow()
    return await queue.claim_fairly(
        session,
        now,
        limit,
        instance_id="test",
        claim_token=token or uuid.uuid4(),
        claimed_until=now + timedelta(seconds=60),
    )


async def labels(session, rows):
    names = {}
    for row in rows:
        item = await session.get(GenerationBatchItem, row.id)
        names[row.id] = (row.batch_id, item.index)
    return [names[row.id] for row in rows]


async def test_round_robin_over_accounts_then_batches(sessionmaker):
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        a, a_site = await add_account(session)
        b, b_site = await add_account(session)
        c, c_site = await add_account(session)
        a_big = await add_batch(
            session, a, a_site, 400, created_at=now - timedelta(minutes=5),
            last_claimed_at=now - timedelta(seconds=1),
        )  # fmt: skip
        a_new = await add_batch(session, a, a_site, 3, created_at=now - timedelta(minutes=1))
        b_one = await add_batch(
            session, b, b_site, 5, created_at=now - timedelta(minutes=4),
            last_claimed_at=now - timedelta(seconds=2),
        )  # fmt: skip
        c_new = await add_batch(session, c, c_site, 2, created_at=now)
        # Another account's canceled batch, and items leased by a live worker: never taken.
        canceled = await add_batch(session, c, c_site, 3, created_at=now - timedelta(hours=1))
        await session.get(GenerationBatch, canceled)
        (await session.get(GenerationBatch, canceled)).status = "canceled"

    async with sessionmaker() as session, session.begin():
        rows = await claim(session, 8)
        picked = await labels(session, rows)
    assert picked == [
        (c_new, 0),  # never served: first
        (b_one, 0),  # served 2 s ago
        (a_new, 0),  # served 1 s ago; its batch never served goes before its big one
        (c_new, 1),
        (b_one, 1),
        (a_big, 0),
        (b_one, 2),
        (a_new, 1),
    ]
    assert {row.kind for row in rows} == {"meta_title"}
    assert [row.attempts for row in rows] == [1] * 8

    async with sessionmaker() as session, session.begin():
        statuses = {
            item.status
            for item in (
                await session.execute(
                    select(GenerationBatchItem).where(
                        GenerationBatchItem.id.in_([row.id for row in rows])
                    )
                )
            ).scalars()
        }
        assert statuses == {"claimed"}
        await queue.mark_batches_claimed(session, {row.batch_id for row in rows}, utcnow())
        again = await claim(session, 100)
        assert not {row.id for row in again} & {row.id for row in rows}
        assert canceled not in {row.batch_id for row in again}


async def test_concurrent_claimers_take_different_items(pg_sessionmaker):
    """PostgreSQL only: SQLite serializes transactions (one process, one claimer)."""
    sessionmaker = pg_sessionmaker
    now = utcnow()
    async with sessionmaker() as session, session.begin():
        account, site = await add_account(session)
        await add_batch(session, account, site, 20, created_at=now)
    first_session = sessionmaker()
    async with first_session, first_session.begin():
        first = await claim(first_session, 8)
        async with sessionmaker() as second_session, second_session.begin():
            second = await claim(second_session, 8)  # while the first is not committed
    assert len(first) == 8 and len(second) == 8
    assert not {row.id for row in first} & {row.id for row in second}


async def test_both_spellings_of_the_start_move_exactly_the_claims_still_valid(pg_sessionmaker):
    """`claimed -> generating`: the ORM update and the driver-pool statement agree: only
    items still claimed under the given token, of batches not canceled, move."""
    import asyncpg

    from app.generation.queue import START_GENERATING_SQL
    from tests.conftest import DEFAULT_PG

    sessionmaker = pg_sessionmaker
    now = utcnow()
    outcomes = []
    for spelling in ("orm", "statement"):
        async with sessionmaker() as session, session.begin():
            account, site = await add_account(session)
            live = await add_batch(session, account, site, 4, created_at=now)
            doomed = await add_batch(session, account, site, 2, created_at=now)
        token = uuid.uuid4()
        async with sessionmaker() as session, session.begin():
            rows = await claim(session, 6, token)
        async with sessionmaker() as session, session.begin():
            (await session.get(GenerationBatch, doomed)).status = "canceled"
            taken_over = next(row for row in rows if row.batch_id == live)
            item = await session.get(GenerationBatchItem, taken_over.id)
            item.claim_token = uuid.uuid4()  # another worker's claim now
        claims = [(row.id, token) for row in rows]
        lease = now + timedelta(seconds=30)
        if spelling == "orm":
            async with sessionmaker() as session, session.begin():
                moved = await queue.start_generating(session, claims, lease)
        else:
            async with sessionmaker() as session:
                url = session.get_bind().url.set(drivername="postgresql")
            connection = await asyncpg.connect(url.render_as_string(hide_password=False))
            try:
                row = await connection.fetchrow(
                    START_GENERATING_SQL, [c[0] for c in claims], [c[1] for c in claims], lease
                )
            finally:
                await connection.close()
            moved = set(row["ids"])
        expected = {row.id for row in rows if row.batch_id != doomed} - {taken_over.id}
        async with sessionmaker() as session:
            generating = set(
                (
                    await session.execute(
                        select(GenerationBatchItem.id).where(
                            GenerationBatchItem.id.in_([row.id for row in rows]),
                            GenerationBatchItem.status == "generating",
                        )
                    )
                ).scalars()
            )
        assert len(expected) >= 2 and any(row.batch_id == doomed for row in rows)
        outcomes.append((moved == expected, generating == expected))
    assert outcomes == [(True, True), (True, True)]
    del DEFAULT_PG


@pytest.mark.parametrize(
    ("backend", "statement"),
    [("sqlite", False), ("postgres", False), ("postgres", True)],
    ids=["sqlite", "postgres-orm", "postgres-statement"],
)
async def test_the_workers_claim_keeps_alive_only_the_holds_it_will_use(
    backend, statement, tmp_path
):
    """`BatchWorkers.claim`, on the ORM path and as one driver-pool statement: the items in
    the fair order, claimed; the holds of those it will generate extended; an item whose
    hold expired, or that ran out of attempts, handed to the recorder to fail, its hold
    left as it was."""
    from app.credits.models import CreditHold
    from app.credits.repository import add_holds
    from app.credits.service import NewHold
    from app.db import create_statement_runner
    from app.generation.runtime import GenerationRuntime
    from app.generation.worker import BatchWorkers

    url = await create_database(backend, str(tmp_path))
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    engine = create_engine(settings)
    runner = await create_statement_runner(settings) if statement else None
    try:
        sessionmaker = create_sessionmaker(engine)
        now = utcnow()
        async with sessionmaker() as session, session.begin():
            a, a_site = await add_account(session)
            b, b_site = await add_account(session)
            first = await add_batch(session, a, a_site, 3, created_at=now - timedelta(minutes=2))
            second = await add_batch(session, b, b_site, 3, created_at=now - timedelta(minutes=1))
            items = {
                (item.batch_id, item.index): item
                for item in (await session.execute(select(GenerationBatchItem))).scalars()
            }
            soon = now + timedelta(seconds=5)
            for (batch_id, index), item in items.items():
                expires = now - timedelta(seconds=1) if (batch_id, index) == (second, 0) else soon
                await add_holds(
                    session,
                    a if batch_id == first else b,
                    [NewHold(item.hold_id, 1, f"batch:{batch_id}:{index}", expires)],
                    created_at=now,
                )
            items[(first, 1)].attempts = settings.batch_max_attempts  # its claim is one more
        runtime = GenerationRuntime(settings, sessionmaker, None, runner)  # type: ignore[arg-type]
        workers = BatchWorkers(runtime)
        claimed, served = await workers.claim(8)

        index_of = {item.id: index for (_, index), item in items.items()}
        assert [(c.batch_id, index_of[c.item_id]) for c in claimed] == [
            (first, 0),  # the two accounts in turn, the batch created first ahead
            (second, 1),  # (first, 1) and (second, 0) went to the recorder
            (first, 2),
            (second, 2),
        ]
        assert served == sorted({first, second})
        failed = {}
        while not workers._results.empty():
            item, answer = workers._results.get_nowait()
            failed[item.item_id] = answer.reason
        assert failed == {
            items[(second, 0)].id: "reservation_expired",
            items[(first, 1)].id: "interrupted",
        }
        async with sessionmaker() as session:
            holds = {
                hold.id: hold for hold in (await session.execute(select(CreditHold))).scalars()
            }
            rows = {
                item.id: item
                for item in (await session.execute(select(GenerationBatchItem))).scalars()
            }
        ttl = timedelta(seconds=settings.batch_hold_ttl_seconds)
        for key, item in items.items():
            hold = holds[item.hold_id]
            if item.id in {c.item_id for c in claimed}:
                assert hold.expires_at >= now + ttl - timedelta(seconds=1), key
            elif key == (second, 0):
                assert hold.expires_at < now, key
            else:
                assert hold.expires_at == soon.replace(microsecond=soon.microsecond), key
            assert hold.status == "open"
            assert rows[item.id].status == "claimed"
            assert rows[item.id].claimed_by == workers.instance_id
            assert rows[item.id].claim_token == claimed[0].token
    finally:
        if runner is not None:
            await runner.close()
        await engine.dispose()
        await drop_database(url)
