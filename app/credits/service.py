"""The credit ledger: every rule about moving credits lives here.

Credits move in two ways only:

* settled changes (grants, purchases, consumption, adjustments, refund reversals) write one
  append-only `ledger_entry` in the same transaction as the balance update;
* holds move credits between `available` and `reserved` without a ledger entry, until the
  hold is settled (a `consumption` entry for what was used), released or expired.

So for every account `available + reserved == SUM(ledger_entry.amount)` and
`reserved == SUM(open holds)`; `find_mismatches` proves it. Callers own the transaction:
nothing here commits.
"""

import enum
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.credits import alerts, repository
from app.credits.models import CreditHold, LedgerEntry
from app.db import utcnow
from app.errors import AppError

BALANCE_CHANGED_KEY = "rankframe.balance_changed"


class InsufficientCredits(AppError):
    status = 402
    code = "insufficient_credits"
    title = "Not enough credits"

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(
            f"This needs {needed} credit{'s' if needed != 1 else ''}; "
            f"{available} {'is' if available == 1 else 'are'} available.",
            needed=needed,
            available=available,
        )


class InsufficientCreditsToTake(InsufficientCredits):
    """Taking credits away (an adjustment) that the account does not have: a conflict with
    the account's state rather than a request to pay."""

    status = 409


class HoldOutcome(enum.StrEnum):
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"
    """The hold had run out when it was settled or swept; its credits went back."""
    ALREADY_RESOLVED = "already_resolved"
    """Nothing changed: the hold had been settled, released or expired before."""


@dataclass(frozen=True)
class HoldResult:
    hold_id: uuid.UUID
    outcome: HoldOutcome
    status: str
    """The hold's status after the call."""
    consumed: int
    entry: LedgerEntry | None = None

    @property
    def changed(self) -> bool:
        return self.outcome is not HoldOutcome.ALREADY_RESOLVED


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int

    @property
    def settled(self) -> int:
        return self.available + self.reserved


@dataclass(frozen=True)
class Mismatch:
    account_id: uuid.UUID
    available: int | None
    """None: the account has no `credit_balance` row at all."""
    reserved: int | None
    ledger_sum: int
    open_holds_sum: int
    broken_entries: int

    def describe(self) -> str:
        stored = (
            "no credit_balance row"
            if self.available is None or self.reserved is None
            else f"available={self.available} reserved={self.reserved}"
        )
        return (
            f"account {self.account_id}: {stored} "
            f"ledger_sum={self.ledger_sum} open_holds_sum={self.open_holds_sum} "
            f"entries_with_wrong_balance_after={self.broken_entries}"
        )


class UnknownHold(LookupError):
    pass


def mark_balance_changed(session: AsyncSession, account_id: uuid.UUID) -> None:
    """Remember that this transaction changed the account's balance (for live updates)."""
    session.info.setdefault(BALANCE_CHANGED_KEY, set()).add(account_id)


async def open_account(
    session: AsyncSession, account_id: uuid.UUID, *, low_balance_threshold: int | None = None
) -> None:
    """The account's balance row, with its low-balance threshold (default: the column's)."""
    await repository.create_balance(
        session, account_id, low_balance_threshold=low_balance_threshold
    )


async def get_balance(session: AsyncSession, account_id: uuid.UUID) -> Balance:
    found = await repository.get_balance(session, account_id)
    if found is None:
        raise LookupError(f"no balance for account {account_id}")
    return Balance(*found)


@dataclass(frozen=True)
class NewHold:
    """A hold as `reserve` wrote it (open, nothing consumed)."""

    id: uuid.UUID
    amount: int
    reference: str
    expires_at: datetime


async def reserve(
    session: AsyncSession,
    account_id: uuid.UUID,
    amount: int,
    *,
    ttl: timedelta,
    reference: str,
) -> NewHold:
    """Hold `amount` credits, or raise `InsufficientCredits` and change nothing."""
    holds = await reserve_many(session, account_id, [amount], ttl=ttl, references=[reference])
    return holds[0]


async def reserve_many(
    session: AsyncSession,
    account_id: uuid.UUID,
    amounts: Sequence[int],
    *,
    ttl: timedelta,
    references: Sequence[str],
) -> list[NewHold]:
    """All the holds at once (a batch's items), or none: `InsufficientCredits`."""
    if not amounts or any(a <= 0 for a in amounts) or len(amounts) != len(references):
        raise ValueError("reserve needs positive amounts, one reference each")
    total = sum(amounts)
    moved = await repository.move_to_reserved(session, account_id, total)
    if moved is None:
        current = await repository.get_balance(session, account_id)
        raise InsufficientCredits(needed=total, available=current[0] if current else 0)
    await alerts.judge(session, account_id, moved, falling=True)
    now = utcnow()
    holds = [
        NewHold(uuid.uuid4(), amount, reference, now + ttl)
        for amount, reference in zip(amounts, references, strict=True)
    ]
    await repository.add_holds(session, account_id, holds, created_at=now)
    mark_balance_changed(session, account_id)
    metrics.count_credits_on_commit(session.info, "reserved", "hold", total)
    return holds


async def settle(
    session: AsyncSession,
    hold_id: uuid.UUID,
    used: int,
    *,
    description: str,
    generation_id: uuid.UUID | None = None,
    batch_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> HoldResult:
    """Charge `used` of the hold (one `consumption` entry) and return the rest.

    A hold resolves once: settling a resolved hold changes nothing and says so; settling
    an expired one releases it instead (a late result is not charged)."""
    now = now or utcnow()
    hold = await repository.lock_hold(session, hold_id)
    if hold is None:
        raise UnknownHold(str(hold_id))
    if hold.status != "open":
        return HoldResult(hold.id, HoldOutcome.ALREADY_RESOLVED, hold.status, hold.consumed)
    if hold.expires_at <= now:
        await _return_holds(session, [hold], "expired", now)
        return HoldResult(hold.id, HoldOutcome.EXPIRED, "expired", 0)
    if not 0 <= used <= hold.amount:
        raise ValueError(f"cannot consume {used} of a hold of {hold.amount}")
    hold.status = "settled"
    hold.consumed = used
    hold.resolved_at = now
    moved = await repository.apply_delta(
        session, hold.account_id, available=hold.amount - used, reserved=-hold.amount
    )
    await alerts.judge(session, hold.account_id, moved, falling=False)
    available, reserved = moved.available, moved.reserved
    entry = None
    if used:
        entry = await repository.insert_entry(
            session,
            LedgerEntry(
                id=uuid.uuid4(),
                account_id=hold.account_id,
                type="consumption",
                amount=-used,
                balance_after=available + reserved,
                description=description,
                hold_id=hold.id,
                generation_id=generation_id,
                batch_id=batch_id,
                created_at=now,
            ),
        )
    mark_balance_changed(session, hold.account_id)
    metrics.count_credits_on_commit(session.info, "consumed", "consumption", used)
    metrics.count_credits_on_commit(session.info, "released", "settled", hold.amount - used)
    return HoldResult(hold.id, HoldOutcome.SETTLED, "settled", used, entry)


@dataclass(frozen=True)
class Charge:
    """What `settle_many` charges to one hold."""

    hold_id: uuid.UUID
    used: int
    description: str
    generation_id: uuid.UUID | None = None
    batch_id: uuid.UUID | None = None


async def settle_many(
    session: AsyncSession, charges: Sequence[Charge], *, now: datetime | None = None
) -> dict[uuid.UUID, HoldResult]:
    """`settle` for many holds at once (a batch worker's results), by the same rules per
    hold, with one balance update per account. Entries are written in hold id order, each
    with its own `balance_after`."""
    now = now or utcnow()
    by_id = {charge.hold_id: charge for charge in charges}
    locked = await repository.lock_open_holds(session, list(by_id))
    results: dict[uuid.UUID, HoldResult] = {}
    expired = [hold for hold in locked if hold.expires_at <= now]
    await _return_holds(session, expired, "expired", now)
    for hold in expired:
        results[hold.id] = HoldResult(hold.id, HoldOutcome.EXPIRED, "expired", 0)
    per_account: dict[uuid.UUID, list[CreditHold]] = defaultdict(list)
    for hold in locked:
        if hold.expires_at <= now:
            continue
        used = by_id[hold.id].used
        if not 0 <= used <= hold.amount:
            raise ValueError(f"cannot consume {used} of a hold of {hold.amount}")
        hold.status = "settled"
        hold.consumed = used
        hold.resolved_at = now
        per_account[hold.account_id].append(hold)
    for account_id in sorted(per_account):
        holds = per_account[account_id]
        held = sum(hold.amount for hold in holds)
        used_total = sum(hold.consumed for hold in holds)
        moved = await repository.apply_delta(
            session, account_id, available=held - used_total, reserved=-held
        )
        await alerts.judge(session, account_id, moved, falling=False)
        balance = moved.available + moved.reserved + used_total
        for hold in holds:
            entry = None
            if hold.consumed:
                balance -= hold.consumed
                charge = by_id[hold.id]
                entry = LedgerEntry(
                    id=uuid.uuid4(),
                    account_id=account_id,
                    type="consumption",
                    amount=-hold.consumed,
                    balance_after=balance,
                    description=charge.description,
                    hold_id=hold.id,
                    generation_id=charge.generation_id,
                    batch_id=charge.batch_id,
                    created_at=now,
                )
                session.add(entry)
            results[hold.id] = HoldResult(
                hold.id, HoldOutcome.SETTLED, "settled", hold.consumed, entry
            )
        mark_balance_changed(session, account_id)
        metrics.count_credits_on_commit(session.info, "consumed", "consumption", used_total)
        metrics.count_credits_on_commit(session.info, "released", "settled", held - used_total)
    await session.flush()
    for hold_id in by_id:
        if hold_id in results:
            continue
        resolved = await session.get(CreditHold, hold_id, populate_existing=True)
        if resolved is None:
            raise UnknownHold(str(hold_id))
        results[hold_id] = HoldResult(
            hold_id, HoldOutcome.ALREADY_RESOLVED, resolved.status, resolved.consumed
        )
    return results


async def release(
    session: AsyncSession, hold_id: uuid.UUID, *, now: datetime | None = None
) -> HoldResult:
    """Return all of the hold's credits to available; once only."""
    results = await release_many(session, [hold_id], now=now)
    if not results:
        raise UnknownHold(str(hold_id))
    return results[0]


async def release_many(
    session: AsyncSession, hold_ids: Sequence[uuid.UUID], *, now: datetime | None = None
) -> list[HoldResult]:
    """Release every still-open hold among `hold_ids` (a canceled batch's items)."""
    now = now or utcnow()
    open_holds = await repository.lock_open_holds(session, hold_ids)
    await _return_holds(session, open_holds, "released", now)
    results = [HoldResult(h.id, HoldOutcome.RELEASED, "released", 0) for h in open_holds]
    released = {h.id for h in open_holds}
    for hold_id in hold_ids:
        if hold_id in released:
            continue
        hold = await session.get(CreditHold, hold_id, populate_existing=True)
        if hold is not None:
            results.append(
                HoldResult(hold.id, HoldOutcome.ALREADY_RESOLVED, hold.status, hold.consumed)
            )
    return results


async def keep_alive(
    session: AsyncSession,
    hold_ids: Sequence[uuid.UUID],
    *,
    ttl: timedelta,
    skip_locked: bool = False,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Extend the holds among `hold_ids` that are open and not yet past their expiry by `ttl`
    from now; returns their ids. An expired hold stays expired (the sweeper releases it).

    Holds are locked in id order; with `skip_locked` (a heartbeat) those another transaction
    is settling or releasing right now are left alone."""
    if not hold_ids:
        return []
    now = now or utcnow()
    return await repository.keep_open_holds_alive(
        session, hold_ids, now, now + ttl, skip_locked=skip_locked
    )


async def expire_due(
    session: AsyncSession, *, now: datetime | None = None, limit: int = 1000
) -> int:
    """Release open holds past their expiry; returns how many were expired."""
    now = now or utcnow()
    due = await repository.lock_due_holds(session, now, limit)
    await _return_holds(session, due, "expired", now)
    return len(due)


async def _return_holds(
    session: AsyncSession, holds: Sequence[CreditHold], status: str, now: datetime
) -> None:
    """Mark locked open holds resolved and give their credits back, one update per account."""
    per_account: dict[uuid.UUID, int] = defaultdict(int)
    for hold in holds:
        hold.status = status
        hold.consumed = 0
        hold.resolved_at = now
        per_account[hold.account_id] += hold.amount
    await session.flush()
    for account_id in sorted(per_account):
        amount = per_account[account_id]
        moved = await repository.apply_delta(
            session, account_id, available=amount, reserved=-amount
        )
        await alerts.judge(session, account_id, moved, falling=False)
        mark_balance_changed(session, account_id)
        metrics.count_credits_on_commit(session.info, "released", status, amount)


async def grant(
    session: AsyncSession,
    account_id: uuid.UUID,
    amount: int,
    *,
    type: str,
    description: str,
    purchase_intent_id: uuid.UUID | None = None,
    polar_order_id: str | None = None,
    generation_id: uuid.UUID | None = None,
    batch_id: uuid.UUID | None = None,
) -> LedgerEntry:
    """Add credits (starter grant, purchase, positive adjustment, a credit-back)."""
    if amount <= 0:
        raise ValueError("a grant is positive")
    moved = await repository.apply_delta(session, account_id, available=amount)
    await alerts.judge(session, account_id, moved, falling=False)
    return await _write_entry(
        session,
        account_id,
        type,
        amount,
        moved.available + moved.reserved,
        description,
        purchase_intent_id=purchase_intent_id,
        polar_order_id=polar_order_id,
        generation_id=generation_id,
        batch_id=batch_id,
    )


async def take(
    session: AsyncSession,
    account_id: uuid.UUID,
    amount: int,
    *,
    type: str,
    description: str,
    at_most_available: bool = False,
    polar_order_id: str | None = None,
    purchase_intent_id: uuid.UUID | None = None,
    refunded_cents: int | None = None,
) -> LedgerEntry | None:
    """Remove credits from available (negative adjustment, refund reversal).

    By default all of `amount` or `InsufficientCreditsToTake`; with `at_most_available` as much
    of it as is available (never below zero), and `None` when that is nothing."""
    if amount <= 0:
        raise ValueError("take a positive amount")
    if at_most_available:
        locked = await repository.lock_balance(session, account_id)
        if locked is None:
            raise LookupError(f"no balance for account {account_id}")
        amount = min(amount, locked[0])
        if amount == 0:
            return None
    moved = await repository.take_available(session, account_id, amount)
    if moved is None:
        current = await repository.get_balance(session, account_id)
        raise InsufficientCreditsToTake(needed=amount, available=current[0] if current else 0)
    await alerts.judge(session, account_id, moved, falling=True)
    return await _write_entry(
        session,
        account_id,
        type,
        -amount,
        moved.available + moved.reserved,
        description,
        purchase_intent_id=purchase_intent_id,
        polar_order_id=polar_order_id,
        refunded_cents=refunded_cents,
    )


async def _write_entry(
    session: AsyncSession,
    account_id: uuid.UUID,
    type: str,
    amount: int,
    balance_after: int,
    description: str,
    **refs: object,
) -> LedgerEntry:
    entry = await repository.insert_entry(
        session,
        LedgerEntry(
            id=uuid.uuid4(),
            account_id=account_id,
            type=type,
            amount=amount,
            balance_after=balance_after,
            description=description,
            created_at=utcnow(),
            **refs,
        ),
    )
    mark_balance_changed(session, account_id)
    movement = "granted" if amount > 0 else "taken"
    metrics.count_credits_on_commit(session.info, movement, type, abs(amount))
    return entry


async def list_entries(
    session: AsyncSession, account_id: uuid.UUID, *, limit: int, before_seq: int | None = None
) -> list[LedgerEntry]:
    return await repository.list_entries(session, account_id, limit=limit, before_seq=before_seq)


async def has_purchased(session: AsyncSession, account_id: uuid.UUID) -> bool:
    return await repository.has_entry_of_type(session, account_id, "purchase")


async def entry_for_order(
    session: AsyncSession, type: str, polar_order_id: str
) -> LedgerEntry | None:
    """The entry of type `type` of a Polar order (the first, for types with several)."""
    return await repository.entry_for_order(session, type, polar_order_id)


async def reversals_for_order(session: AsyncSession, polar_order_id: str) -> list[LedgerEntry]:
    return await repository.entries_for_order(session, "refund_reversal", polar_order_id)


async def lock_balance(session: AsyncSession, account_id: uuid.UUID) -> Balance:
    """Hold the account's balance row lock until the transaction ends (serializes work that
    decides from the ledger what to write next, such as successive refunds of one order)."""
    locked = await repository.lock_balance(session, account_id)
    if locked is None:
        raise LookupError(f"no balance for account {account_id}")
    return Balance(*locked)


async def find_mismatches(session: AsyncSession) -> list[Mismatch]:
    """Every account whose stored balance disagrees with its ledger or its open holds."""
    broken = await repository.broken_chain_counts(session)
    mismatches = []
    for (
        account_id,
        available,
        reserved,
        ledger_sum,
        holds_sum,
    ) in await repository.balance_audit_rows(session):
        broken_entries = broken.get(account_id, 0)
        if (
            available is None
            or reserved is None
            or available + reserved != ledger_sum
            or reserved != holds_sum
            or broken_entries
        ):
            mismatches.append(
                Mismatch(
                    account_id,
                    available,
                    reserved,
                    int(ledger_sum),
                    int(holds_sum),
                    broken_entries,
                )
            )
    return mismatches
