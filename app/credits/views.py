"""Read models shared by the balance endpoint, its live stream and the admin view."""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.accounts.models import Account
from app.accounts.service import SubscriptionState, is_usable, key_lookup_id, key_matches
from app.credits import repository, service
from app.credits.schemas import BalanceRead, LedgerEntryRead, LedgerPage, badge_text
from app.db import utcnow


async def balance_for_key(
    connection: AsyncConnection, raw_key: str
) -> tuple[uuid.UUID, BalanceRead] | None:
    """The badge for an API key in one statement (the endpoint every open plugin polls), or
    None when the key is unknown or revoked."""
    lookup_id = key_lookup_id(raw_key)
    if lookup_id is None:
        return None
    return badge_for_key(raw_key, await repository.balance_by_api_key(connection, lookup_id))


def badge_for_key(raw_key: str, row: Any) -> tuple[uuid.UUID, BalanceRead] | None:
    """The badge from the badge statement's row, if the key is live and matches."""
    if row is None or not key_matches(raw_key, row.secret_hash, row.revoked_at):
        return None
    return row.account_id, balance_read(row.available, row.reserved, row)


def balance_read(available: int, reserved: int, subscription: SubscriptionState) -> BalanceRead:
    """The badge as every path answers it (the route, its fast lane, streams, generations)."""
    now = utcnow()
    return BalanceRead(
        available=available,
        reserved=reserved,
        display=badge_text(available),
        usable=is_usable(subscription, now),
        subscription_status=subscription.subscription_status,  # type: ignore[arg-type]
        as_of=now,
    )


async def balance_snapshot(session: AsyncSession, account: Account) -> BalanceRead:
    balance = await service.get_balance(session, account.id)
    return balance_read(balance.available, balance.reserved, account)


CURSOR_PATTERN = r"^[0-9]{1,18}$"


def encode_cursor(seq: int) -> str:
    """The cursor is the position of the last entry seen; pages continue strictly before it."""
    return str(seq)


async def ledger_page(
    session: AsyncSession, account: Account, *, limit: int, cursor: str | None
) -> LedgerPage:
    before = int(cursor) if cursor else None
    entries = await service.list_entries(session, account.id, limit=limit + 1, before_seq=before)
    has_more = len(entries) > limit
    entries = entries[:limit]
    return LedgerPage(
        entries=[LedgerEntryRead.model_validate(e) for e in entries],
        next_cursor=encode_cursor(entries[-1].seq) if has_more else None,
    )
