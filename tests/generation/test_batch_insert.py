"""A batch's rows as `POST /v1/generation-batches` writes them: one open hold per item and
one queued item per input, the same on both databases (PostgreSQL inserts them from arrays,
SQLite row by row)."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import Site
from app.config import Settings
from app.credits import service as credits
from app.credits.models import CreditHold
from app.db import utcnow
from app.generation import batches
from app.generation.models import GenerationBatchItem
from app.generation.providers.base import GenerationKind
from tests.conftest import BACKENDS
from tests.databases import migrated_sessionmaker

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(params=BACKENDS)
async def sessionmaker(request, tmp_path) -> AsyncIterator[object]:
    """A migrated database with no app (so no worker claims anything)."""
    async with migrated_sessionmaker(request.param, tmp_path) as made:
        yield made


async def test_a_batch_writes_one_open_hold_and_one_queued_item_per_input(sessionmaker):
    payloads = [
        {"page_content": f'Page {index}: caf\u00e9 "quoted" \\ {{braces}}', "language": "fr"}
        for index in range(300)
    ]
    payloads[7] = {"image_url": "https://images.example.com/a.png", "context": None}
    async with sessionmaker() as session, session.begin():
        account = await accounts.add_account(session, f"{uuid.uuid4().hex}@e.com", trial_days=7)
        await credits.open_account(session, account.id)
        await credits.grant(session, account.id, 400, type="adjustment", description="test")
        site = Site(account_id=account.id, framer_project_id="p", name="s")
        session.add(site)
        await session.flush()
        before = utcnow()
        batch = await batches.reserve_batch(
            session, SETTINGS, account.id, site.id, GenerationKind.META_TITLE, payloads, "economy"
        )
    async with sessionmaker() as session:
        items = (
            await session.execute(
                select(GenerationBatchItem)
                .where(GenerationBatchItem.batch_id == batch.id)
                .order_by(GenerationBatchItem.index)
            )
        ).scalars().all()  # fmt: skip
        holds = {
            hold.id: hold
            for hold in (
                await session.execute(select(CreditHold).where(CreditHold.account_id == account.id))
            ).scalars()
        }
        balance = await credits.get_balance(session, account.id)
    assert [item.index for item in items] == list(range(300))
    assert [item.input for item in items] == payloads
    for item in items:
        assert (item.status, item.attempts, item.credits_charged) == ("queued", 0, 0)
        assert (item.priority, item.claimed_by, item.claim_token, item.event_seq) == (
            "economy",
            None,
            None,
            None,
        )
        assert item.output is None and item.finished_at is None
        hold = holds[item.hold_id]
        assert (hold.status, hold.amount, hold.consumed) == ("open", 1, 0)
        assert hold.reference == f"batch:{batch.id}:{item.index}"
        ttl = timedelta(seconds=SETTINGS.batch_hold_ttl_seconds)
        assert before + ttl <= hold.expires_at <= utcnow() + ttl
        assert before <= hold.created_at <= utcnow()
        assert hold.resolved_at is None
    assert len(holds) == 300 == len({item.hold_id for item in items})
    assert (balance.available, balance.reserved) == (100, 300)
