"""Read models shared by the balance endpoint, its live stream and the admin view."""

import base64
import binascii

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.accounts.service import is_usable
from app.credits import service
from app.credits.schemas import BalanceRead, LedgerEntryRead, LedgerPage, badge_text
from app.db import utcnow
from app.errors import AppError

MAX_SEQ = 2**63 - 1
"""The largest `ledger_entry.seq` (a signed 64-bit key); a cursor beyond it is not ours."""


class InvalidCursor(AppError):
    status = 422
    code = "validation_error"
    title = "The request is not valid"


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


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = raw[1:]
        if not raw.startswith("s") or not (digits.isascii() and digits.isdigit()):
            raise ValueError(raw)
        seq = int(digits)
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(raw)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(
            "`cursor` is not one this service issued.",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from exc


async def ledger_page(
    session: AsyncSession, account: Account, *, limit: int, cursor: str | None
) -> LedgerPage:
    before = decode_cursor(cursor) if cursor else None
    entries = await service.list_entries(session, account.id, limit=limit + 1, before_seq=before)
    has_more = len(entries) > limit
    entries = entries[:limit]
    return LedgerPage(
        entries=[LedgerEntryRead.model_validate(e) for e in entries],
        next_cursor=encode_cursor(entries[-1].seq) if has_more else None,
    )
