"""Read models shared by the balance endpoint, its live stream and the admin view."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.accounts.service import is_usable
from app.credits import service
from app.credits.schemas import BalanceRead, LedgerEntryRead, LedgerPage, badge_text
from app.db import utcnow


async def balance_snapshot(session: AsyncSession, account: Account) -> BalanceRead:
    balance = await service.get_balance(session, account.id)
    now = utcnow()
    return BalanceRead(
        available=balance.available,
        reserved=balance.reserved,
        display=badge_text(balance.available),
        usable=is_usable(account, now),
        subscription_status=account.subscription_status,  # type: ignore[arg-type]
        as_of=now,
    )


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
