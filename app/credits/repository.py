"""SQL for balances, holds and ledger entries. Callers own the transaction."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.accounts.models import Account, ApiKey
from app.credits.models import CreditBalance, CreditHold, LedgerEntry
from app.db import StatementRunner, utcnow

RATE_TOKENS = (
    "LEAST({burst}, COALESCE(rate_tokens, {burst}) + GREATEST(0, EXTRACT(EPOCH FROM "
    "({now} - COALESCE(rate_updated_at, {now})))::float8) * {rate})"
)
"""PostgreSQL: the account's generation tokens at `{now}`, its bucket refilled at `{rate}`
a second up to `{burst}` (in a statement on `credit_balance`). Evaluated on the row the
`UPDATE` locked, so concurrent requests of every process queue on it and each sees the
bucket the previous one left: the one definition used by the generation's reserve
statement and by `spend_rate_token`."""

_SPEND_RATE_TOKEN = text(
    "UPDATE credit_balance SET rate_tokens = {tokens} - 1, rate_updated_at = :now "
    "WHERE account_id = :account_id AND {tokens} >= 1 RETURNING account_id".format(
        tokens=RATE_TOKENS.format(
            now="CAST(:now AS TIMESTAMPTZ)",
            rate="CAST(:rate AS FLOAT8)",
            burst="CAST(:burst AS FLOAT8)",
        )
    )
)
_RATE_TOKENS_LEFT = text(
    "SELECT {tokens} FROM credit_balance WHERE account_id = :account_id".format(
        tokens=RATE_TOKENS.format(
            now="CAST(:now AS TIMESTAMPTZ)",
            rate="CAST(:rate AS FLOAT8)",
            burst="CAST(:burst AS FLOAT8)",
        )
    )
)


async def spend_rate_token(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    now: datetime,
    per_second: float,
    burst: int,
) -> float:
    """PostgreSQL: take one token from the account's bucket (locking its balance row until
    the transaction ends). 0 when taken; else the seconds until one is there."""
    values = {"account_id": account_id, "now": now, "rate": per_second, "burst": float(burst)}
    if (await session.execute(_SPEND_RATE_TOKEN, values)).first() is not None:
        return 0.0
    left = (await session.execute(_RATE_TOKENS_LEFT, values)).scalar_one_or_none()
    if left is None:
        return 0.0  # no balance row: the reserve refuses it
    return max(0.0, (1 - float(left)) / per_second) if per_second > 0 else 60.0


class BalanceRow(NamedTuple):
    """A balance right after a change, with what its alerts are judged by."""

    available: int
    reserved: int
    low_balance_threshold: int
    alert_state: str


_BALANCE_ROW = (
    CreditBalance.available,
    CreditBalance.reserved,
    CreditBalance.low_balance_threshold,
    CreditBalance.alert_state,
)


def _balance_row(row: Any) -> BalanceRow:
    return BalanceRow(row[0], row[1], row[2], row[3])


async def create_balance(
    session: AsyncSession, account_id: uuid.UUID, *, low_balance_threshold: int | None = None
) -> CreditBalance:
    balance = CreditBalance(account_id=account_id, available=0, reserved=0)
    if low_balance_threshold is not None:
        balance.low_balance_threshold = low_balance_threshold
    session.add(balance)
    await session.flush()
    return balance


async def get_balance(session: AsyncSession, account_id: uuid.UUID) -> tuple[int, int] | None:
    row = (
        await session.execute(
            select(CreditBalance.available, CreditBalance.reserved).where(
                CreditBalance.account_id == account_id
            )
        )
    ).one_or_none()
    return (row.available, row.reserved) if row else None


_BALANCE_BY_API_KEY = (
    select(
        ApiKey.secret_hash,
        ApiKey.revoked_at,
        Account.id.label("account_id"),
        Account.subscription_status,
        Account.trial_ends_at,
        Account.current_period_end,
        CreditBalance.available,
        CreditBalance.reserved,
    )
    .join(Account, Account.id == ApiKey.account_id)
    .join(CreditBalance, CreditBalance.account_id == ApiKey.account_id)
    .where(ApiKey.lookup_id == bindparam("lookup_id"))
)
"""Built once: constructing a statement per request costs more than running it."""


BALANCE_BY_API_KEY_SQL = str(_BALANCE_BY_API_KEY.compile(dialect=asyncpg_dialect()))
"""The badge statement for asyncpg (`$1` for the lookup id)."""
BALANCE_WARM_UP = (BALANCE_BY_API_KEY_SQL, ("",))
"""It, with an argument that matches no row (no key's lookup id is empty)."""


async def balance_by_api_key_on_driver(statements: StatementRunner, lookup_id: str) -> Any:
    """The badge's statement on the driver's connections (PostgreSQL): a record or None."""
    return await statements.fetchrow(BALANCE_BY_API_KEY_SQL, lookup_id)


async def balance_by_api_key(connection: AsyncConnection, lookup_id: str) -> Any:
    """Key, subscription state and balance in one statement (a row or None). On PostgreSQL
    the badge's fast lane runs it on the driver (`balance_by_api_key_on_driver`); this is
    the route's path: SQLite, and the cases the lane hands on."""
    result = await connection.execute(_BALANCE_BY_API_KEY, {"lookup_id": lookup_id})
    return result.one_or_none()


async def lock_balance(session: AsyncSession, account_id: uuid.UUID) -> tuple[int, int] | None:
    """Read the balance and hold its row lock until the transaction ends."""
    row = (
        await session.execute(
            select(CreditBalance.available, CreditBalance.reserved)
            .where(CreditBalance.account_id == account_id)
            .with_for_update()
        )
    ).one_or_none()
    return (row.available, row.reserved) if row else None


async def balance_row(
    session: AsyncSession, account_id: uuid.UUID, *, lock: bool = False
) -> BalanceRow:
    statement = select(*_BALANCE_ROW).where(CreditBalance.account_id == account_id)
    if lock:
        statement = statement.with_for_update()
    return _balance_row((await session.execute(statement)).one())


async def set_alert_state(session: AsyncSession, account_id: uuid.UUID, state: str) -> None:
    await session.execute(
        update(CreditBalance)
        .where(CreditBalance.account_id == account_id)
        .values(alert_state=state)
        .execution_options(synchronize_session=False)
    )


async def set_threshold(session: AsyncSession, account_id: uuid.UUID, threshold: int) -> BalanceRow:
    """Change the threshold (locking the row); the balance with the new threshold."""
    row = (
        await session.execute(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id)
            .values(low_balance_threshold=threshold)
            .returning(*_BALANCE_ROW)
            .execution_options(synchronize_session=False)
        )
    ).one()
    return _balance_row(row)


async def move_to_reserved(
    session: AsyncSession, account_id: uuid.UUID, amount: int
) -> BalanceRow | None:
    """Atomically move `amount` from available to reserved if that much is available."""
    row = (
        await session.execute(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id, CreditBalance.available >= amount)
            .values(
                available=CreditBalance.available - amount,
                reserved=CreditBalance.reserved + amount,
                updated_at=utcnow(),
            )
            .returning(*_BALANCE_ROW)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    return _balance_row(row) if row else None


async def take_available(
    session: AsyncSession, account_id: uuid.UUID, amount: int
) -> BalanceRow | None:
    """Atomically remove `amount` from available if that much is available."""
    row = (
        await session.execute(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id, CreditBalance.available >= amount)
            .values(available=CreditBalance.available - amount, updated_at=utcnow())
            .returning(*_BALANCE_ROW)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    return _balance_row(row) if row else None


async def apply_delta(
    session: AsyncSession, account_id: uuid.UUID, *, available: int = 0, reserved: int = 0
) -> BalanceRow:
    """Add the deltas; the CHECK constraints refuse any result below zero."""
    row = (
        await session.execute(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id)
            .values(
                available=CreditBalance.available + available,
                reserved=CreditBalance.reserved + reserved,
                updated_at=utcnow(),
            )
            .returning(*_BALANCE_ROW)
            .execution_options(synchronize_session=False)
        )
    ).one()
    return _balance_row(row)


async def insert_entry(session: AsyncSession, entry: LedgerEntry) -> LedgerEntry:
    session.add(entry)
    await session.flush()
    return entry


_ADD_HOLDS = text(
    "INSERT INTO credit_hold "
    "(id, account_id, amount, consumed, status, reference, created_at, expires_at) "
    "SELECT h.id, :account_id, h.amount, 0, 'open', h.reference, :created_at, h.expires_at "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS bigint[]), "
    "CAST(:references AS text[]), CAST(:expires AS timestamptz[])) "
    "AS h(id, amount, reference, expires_at)"
).bindparams(
    bindparam("account_id", type_=CreditHold.account_id.type),
    bindparam("created_at", type_=CreditHold.created_at.type),
)


async def add_holds(
    session: AsyncSession, account_id: uuid.UUID, holds: Sequence[Any], *, created_at: datetime
) -> None:
    """New open holds (`id`, `amount`, `reference`, `expires_at` each) in one insert: a
    batch's hundreds of items without the unit of work. On PostgreSQL the values go as four
    arrays (`unnest`): four parameters instead of eight per hold, which took most of a
    500-item batch's `POST` (docs/benchmarks.md)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            _ADD_HOLDS,
            {
                "account_id": account_id,
                "created_at": created_at,
                "ids": [hold.id for hold in holds],
                "amounts": [hold.amount for hold in holds],
                "references": [hold.reference for hold in holds],
                "expires": [hold.expires_at for hold in holds],
            },
        )
        return
    rows = [
        {
            "id": hold.id,
            "account_id": account_id,
            "amount": hold.amount,
            "consumed": 0,
            "status": "open",
            "reference": hold.reference,
            "created_at": created_at,
            "expires_at": hold.expires_at,
        }
        for hold in holds
    ]
    await session.execute(insert(CreditHold), rows)


async def lock_hold(session: AsyncSession, hold_id: uuid.UUID) -> CreditHold | None:
    return (
        await session.execute(
            select(CreditHold)
            .where(CreditHold.id == hold_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def lock_open_holds(session: AsyncSession, hold_ids: Sequence[uuid.UUID]) -> list[CreditHold]:
    """Lock the still-open holds among `hold_ids`, in id order so lockers never deadlock."""
    statement = (
        select(CreditHold)
        .where(CreditHold.id.in_(hold_ids), CreditHold.status == "open")
        .order_by(CreditHold.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def lock_due_holds(session: AsyncSession, now: datetime, limit: int) -> list[CreditHold]:
    """Open holds past their expiry; concurrent sweepers on PostgreSQL take disjoint sets."""
    statement = (
        select(CreditHold)
        .where(CreditHold.status == "open", CreditHold.expires_at <= now)
        .order_by(CreditHold.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


def _extend_open_holds(ids: Any, now: datetime, expires_at: datetime) -> Any:
    """The update that pushes back the expiry of the holds matched by `ids` that are still
    open and not yet expired at `now`."""
    return (
        update(CreditHold)
        .where(ids, CreditHold.status == "open", CreditHold.expires_at > now)
        .values(expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )


async def keep_open_holds_alive(
    session: AsyncSession,
    hold_ids: Sequence[uuid.UUID],
    now: datetime,
    expires_at: datetime,
    *,
    skip_locked: bool = False,
) -> list[uuid.UUID]:
    """One statement: lock the holds among `hold_ids` still open (in id order, as every
    locker of several holds does; with `skip_locked` those locked elsewhere are left out),
    push the expiry of those not yet expired at `now` to `expires_at`, return their ids."""
    locked = (
        select(CreditHold.id)
        .where(CreditHold.id.in_(hold_ids), CreditHold.status == "open")
        .order_by(CreditHold.id)
        .with_for_update(skip_locked=skip_locked)
    )
    result = await session.execute(
        _extend_open_holds(CreditHold.id.in_(locked), now, expires_at).returning(CreditHold.id)
    )
    return list(result.scalars())


async def list_entries(
    session: AsyncSession, account_id: uuid.UUID, *, limit: int, before_seq: int | None
) -> list[LedgerEntry]:
    statement = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_seq is not None:
        statement = statement.where(LedgerEntry.seq < before_seq)
    statement = statement.order_by(LedgerEntry.seq.desc()).limit(limit)
    return list((await session.execute(statement)).scalars())


async def has_entry_of_type(session: AsyncSession, account_id: uuid.UUID, type_: str) -> bool:
    statement = (
        select(LedgerEntry.seq)
        .where(LedgerEntry.account_id == account_id, LedgerEntry.type == type_)
        .limit(1)
    )
    return (await session.execute(statement)).first() is not None


async def balance_audit_rows(
    session: AsyncSession,
) -> list[tuple[uuid.UUID, int | None, int | None, int, int]]:
    """Per account: available, reserved (None without a balance row), the ledger's sum and
    the open holds' sum. Every account is listed, so a lost balance row shows up too."""
    ledger = (
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.account_id)
        .subquery()
    )
    holds = (
        select(CreditHold.account_id, func.sum(CreditHold.amount).label("total"))
        .where(CreditHold.status == "open")
        .group_by(CreditHold.account_id)
        .subquery()
    )
    statement = (
        select(
            Account.id,
            CreditBalance.available,
            CreditBalance.reserved,
            func.coalesce(ledger.c.total, 0),
            func.coalesce(holds.c.total, 0),
        )
        .outerjoin(CreditBalance, CreditBalance.account_id == Account.id)
        .outerjoin(ledger, ledger.c.account_id == Account.id)
        .outerjoin(holds, holds.c.account_id == Account.id)
        .order_by(Account.id)
    )
    return [tuple(row) for row in (await session.execute(statement)).all()]  # type: ignore[misc]


async def broken_chain_counts(session: AsyncSession) -> dict[uuid.UUID, int]:
    """Accounts with entries whose `balance_after` is not the running sum of amounts."""
    running = select(
        LedgerEntry.account_id,
        LedgerEntry.balance_after,
        func.sum(LedgerEntry.amount)
        .over(partition_by=LedgerEntry.account_id, order_by=LedgerEntry.seq)
        .label("running_sum"),
    ).subquery()
    statement = (
        select(running.c.account_id, func.count())
        .where(running.c.balance_after != running.c.running_sum)
        .group_by(running.c.account_id)
    )
    return {row[0]: row[1] for row in (await session.execute(statement)).all()}


async def entries_for_order(
    session: AsyncSession, type_: str, polar_order_id: str
) -> list[LedgerEntry]:
    statement = (
        select(LedgerEntry)
        .where(LedgerEntry.type == type_, LedgerEntry.polar_order_id == polar_order_id)
        .order_by(LedgerEntry.seq)
    )
    return list((await session.execute(statement)).scalars())


async def entry_for_order(
    session: AsyncSession, type_: str, polar_order_id: str
) -> LedgerEntry | None:
    statement = select(LedgerEntry).where(
        LedgerEntry.type == type_, LedgerEntry.polar_order_id == polar_order_id
    )
    return (await session.execute(statement.limit(1))).scalar_one_or_none()
