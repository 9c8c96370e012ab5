"""The ledger's fast path: one-statement spellings of `reserve` and `settle` of a one-credit
hold, for asyncpg (`app.db.StatementRunner`), beside the ORM functions they mirror
(`app.credits.service.reserve` and `settle`).

Each statement does in one round trip what the ORM path does in several; on anything
unusual it changes nothing and returns no row, and the caller takes the ORM path, which
knows every rule and error. The balance row is locked only inside the statement, so a hot
account is serialized by PostgreSQL alone, not by round trips.

The credit rules are written once here: the conditional move `available >= n`, the hold
row, settling it, the `consumption` entry with its `balance_after`, the balance channel's
`pg_notify`, the rate bucket (`repository.RATE_TOKENS`) and the alerts predicate
(`alerts.next_state_sql`). What owns the hold (a generation) adds only its own row, as
CTEs spliced into the statement (`reserve_one_sql`, `settle_one_sql`). Release and expiry
have no fast spelling: the ORM path resolves every hold the fast path opened
(tests/credits/test_statement_parity.py proves both paths write the same rows).
"""

from typing import Any, Protocol

from app import metrics
from app.credits import alerts
from app.credits.events import CHANNEL
from app.credits.repository import RATE_TOKENS

__all__ = [
    "CHANNEL",
    "Executor",
    "count_reserved",
    "count_settled",
    "keep_alive_sql",
    "reserve_one_sql",
    "settle_one_sql",
]


class Executor(Protocol):
    """What runs a statement: the `StatementRunner` (one statement, atomic on its own) or an
    asyncpg connection inside a transaction."""

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


def reserve_one_sql(
    *,
    account_id: str,
    hold_id: str,
    reference: str,
    now: str,
    expires_at: str,
    rate: str,
    burst: str,
    channel: str,
    before: str,
    precondition: str,
    owner: str,
) -> str:
    """One credit of the account's held (`reserve(..., 1)`) with one token of its rate
    bucket, or nothing.

    The value arguments are the SQL of what is bound (`$n`, cast here) and `reference` the
    SQL of the hold's reference. `before`: the owner's CTEs that come first (`name AS
    (...)`); `precondition`: what must hold besides the balance (over those CTEs); `owner`:
    the owner's CTE `name AS (...)` inserting its row from `hold` (its `id`), whose row is
    what sends the notification.

    No row either when this credit would move the balance alerts: a crossing is judged and
    its event recorded by the ORM path, in its transaction, under the same row lock."""
    now = f"{now}::timestamptz"
    tokens = RATE_TOKENS.format(now=now, rate=f"{rate}::float8", burst=f"{burst}::float8")
    return f"""
WITH {before}, balance AS (
    UPDATE credit_balance
    SET available = available - 1, reserved = reserved + 1, updated_at = {now},
        rate_tokens = {tokens} - 1, rate_updated_at = {now}
    WHERE account_id = {account_id}::uuid AND available >= 1 AND {precondition}
      AND {tokens} >= 1
      AND /*alerts*/ ({alerts.next_state_sql("available - 1")}) = alert_state
    RETURNING account_id
), hold AS (
    INSERT INTO credit_hold (id, account_id, amount, consumed, status, reference, created_at,
                             expires_at)
    SELECT {hold_id}::uuid, account_id, 1, 0, 'open', {reference}, {now},
           {expires_at}::timestamptz
    FROM balance
    RETURNING id
), {owner}
SELECT pg_notify({channel}::text, {account_id}::uuid::text) FROM {_cte_name(owner)}
"""


def settle_one_sql(
    *,
    hold_id: str,
    now: str,
    entry_id: str,
    description: str,
    generation_id: str,
    channel: str,
    before: str,
    precondition: str,
    owner: str,
) -> str:
    """The one credit of an open, unexpired hold charged (`settle(hold, 1)`): the hold
    settled, `reserved` down by one, one `consumption` entry with its `balance_after`, the
    balance channel notified; or nothing. Returns `available`, `reserved` after.

    The value arguments as for `reserve_one_sql`; `before` / `precondition` too; `owner`:
    the owner's CTE `name AS (...)` updating its row once `hold` is settled and returning
    its `account_id`. (A charge moves `reserved` only, so it never crosses an alert
    threshold.)"""
    now = f"{now}::timestamptz"
    return f"""
WITH {before}, hold AS (
    UPDATE credit_hold SET status = 'settled', consumed = 1, resolved_at = {now}
    WHERE id = {hold_id}::uuid AND status = 'open' AND expires_at > {now} AND amount = 1
      AND {precondition}
    RETURNING account_id
), {owner}, balance AS (
    UPDATE credit_balance SET reserved = reserved - 1, updated_at = {now}
    WHERE account_id = (SELECT account_id FROM {_cte_name(owner)})
    RETURNING account_id, available, reserved
), entry AS (
    INSERT INTO ledger_entry (id, account_id, type, amount, balance_after, description,
                              hold_id, generation_id, created_at)
    SELECT {entry_id}::uuid, account_id, 'consumption', -1, available + reserved,
           {description}::text, {hold_id}::uuid, {generation_id}::uuid, {now}
    FROM balance
    RETURNING account_id
)
SELECT balance.available, balance.reserved, pg_notify({channel}::text, balance.account_id::text)
FROM balance JOIN entry ON entry.account_id = balance.account_id
"""


def keep_alive_sql(*, name: str, hold_ids: str, now: str, expires_at: str) -> str:
    """The CTE `name AS (...)` that is `keep_alive` (`repository.keep_open_holds_alive`):
    the holds whose ids `hold_ids` selects (SQL over the statement's other CTEs) that are
    open, locked in id order, those not yet expired at `now` extended to `expires_at`; it
    returns their `id`s. An expired hold stays expired (the sweeper releases it)."""
    now = f"{now}::timestamptz"
    return f"""{name} AS (
    UPDATE credit_hold SET expires_at = {expires_at}::timestamptz
    WHERE id IN (SELECT h.id FROM credit_hold h
                 WHERE h.id IN ({hold_ids}) AND h.status = 'open'
                 ORDER BY h.id FOR UPDATE)
      AND status = 'open' AND expires_at > {now}
    RETURNING id
)"""


def _cte_name(cte: str) -> str:
    return cte.split(" AS ", 1)[0].strip()


def count_reserved(amount: int = 1) -> None:
    """The metrics of a fast reserve, once it committed (as `reserve` counts on commit)."""
    metrics.count_credits("reserved", "hold", amount)


def count_settled(used: int = 1) -> None:
    """The metrics of a fast settle of a hold used in full, once it committed."""
    metrics.count_credits("consumed", "consumption", used)
