"""Balance alerts: when `available` crosses an account's low-balance threshold, one
outbound event per crossing (`balance.low`, `balance.depleted`, `balance.recovered`).

The rule is one state machine over the account's `alert_state` (`ok`, `low`, `depleted`),
judged after every change of `available` under the balance row's lock (every balance
change updates that row, so concurrent changes are judged one after another) and recorded
in the same transaction:

* `ok` -> `low` when `available` falls below the threshold (`balance.low`), or straight to
  `depleted` at 0 (`balance.low` then `balance.depleted`);
* `low` -> `depleted` at 0 (`balance.depleted`);
* `low` or `depleted` -> `ok` once `available` is back at or above the threshold
  (`balance.recovered`). Climbing from 0 to just under the threshold stays `depleted`, so a
  balance bouncing between 0 and 1 (a failed generation's credit coming back) is one
  crossing, not one per bounce;
* threshold 0: alerts off, always `ok`, nothing sent;
* a rise never moves the state down, a fall never up: `balance.low` and
  `balance.depleted` are sent only by a decrease (a new account granted 30 credits with a
  threshold of 50 is not "low" until it spends one), `balance.recovered` only by an
  increase. Raising the threshold counts as a fall, lowering it as a rise.

`available` is judged as it moves, reserves included: a generation that takes the last
credit above the threshold sends `balance.low` when it reserves, not when it is charged
(the contract speaks of `available`, which is what a customer can still start). A charge
never crosses (it moves `reserved` only); a released hold can recover.
"""

import enum
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.credits import repository
from app.credits.repository import BalanceRow
from app.outbound import service as outbound


class AlertState(enum.StrEnum):
    OK = "ok"
    LOW = "low"
    DEPLETED = "depleted"


TRANSITION_EVENTS: dict[tuple[AlertState, AlertState], tuple[str, ...]] = {
    (AlertState.OK, AlertState.LOW): ("balance.low",),
    (AlertState.OK, AlertState.DEPLETED): ("balance.low", "balance.depleted"),
    (AlertState.LOW, AlertState.DEPLETED): ("balance.depleted",),
    (AlertState.LOW, AlertState.OK): ("balance.recovered",),
    (AlertState.DEPLETED, AlertState.OK): ("balance.recovered",),
}
"""What each move of the state sends (every other move sends nothing)."""


_SEVERITY = {AlertState.OK: 0, AlertState.LOW: 1, AlertState.DEPLETED: 2}


def next_state(
    available: int, threshold: int, state: AlertState, *, falling: bool = True
) -> AlertState:
    """Where `available` leaves the alerts, coming from `state` by a fall (or a rise)."""
    if threshold == 0:
        return AlertState.OK
    if available == 0:
        new = AlertState.DEPLETED
    elif available >= threshold:
        new = AlertState.OK
    else:
        new = AlertState.LOW if state is AlertState.OK else state
    if not falling and _SEVERITY[new] > _SEVERITY[state]:
        return state
    return new


def next_state_sql(available: str) -> str:
    """`next_state` of a fall as SQL over the `credit_balance` row, for statements that
    take from `available` on their own (the single generation's fast reserve): `available`
    is the SQL of the value after the move. Kept beside the rule; a parity test checks that
    both agree."""
    return (
        "CASE WHEN low_balance_threshold = 0 THEN 'ok' "
        f"WHEN {available} = 0 THEN 'depleted' "
        f"WHEN {available} >= low_balance_threshold THEN 'ok' "
        "WHEN alert_state = 'ok' THEN 'low' ELSE alert_state END"
    )


def balance_data(account_id: uuid.UUID, balance: BalanceRow) -> dict[str, Any]:
    """What every outbound event's `data` carries."""
    return {
        "account_id": str(account_id),
        "available": balance.available,
        "reserved": balance.reserved,
        "low_balance_threshold": balance.low_balance_threshold,
    }


async def judge(
    session: AsyncSession, account_id: uuid.UUID, balance: BalanceRow, *, falling: bool
) -> None:
    """After a change of the account's balance (its row locked by that change): move the
    alert state and record the events of the move, in this transaction."""
    old = AlertState(balance.alert_state)
    new = next_state(balance.available, balance.low_balance_threshold, old, falling=falling)
    if new is old:
        return
    await repository.set_alert_state(session, account_id, new.value)
    for event_type in TRANSITION_EVENTS.get((old, new), ()):
        await outbound.record(session, account_id, event_type, balance_data(account_id, balance))


async def record_event(
    session: AsyncSession, account_id: uuid.UUID, event_type: str, **extra: Any
) -> None:
    """An account event (`purchase.completed`, `purchase.refunded`) with the balance as it
    is in this transaction."""
    balance = await repository.balance_row(session, account_id)
    await outbound.record(
        session, account_id, event_type, {**balance_data(account_id, balance), **extra}
    )


async def get_threshold(session: AsyncSession, account_id: uuid.UUID) -> int:
    return (await repository.balance_row(session, account_id)).low_balance_threshold


async def set_threshold(session: AsyncSession, account_id: uuid.UUID, threshold: int) -> int:
    """Change the account's threshold and judge the balance against it at once, as any
    change is judged: raising it above `available` sends `balance.low`, lowering it under
    `available` after a low sends `balance.recovered`; 0 turns alerts off silently."""
    before = await repository.balance_row(session, account_id, lock=True)
    balance = await repository.set_threshold(session, account_id, threshold)
    if threshold == 0:
        if balance.alert_state != AlertState.OK:
            await repository.set_alert_state(session, account_id, AlertState.OK.value)
        return threshold
    falling = threshold > before.low_balance_threshold
    await judge(session, account_id, balance, falling=falling)
    return threshold
