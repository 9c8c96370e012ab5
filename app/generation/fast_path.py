"""PostgreSQL: the single generation's reserve and charge as one statement each on the
asyncpg driver (`app.db.StatementRunner`), the ledger's statements (`app.credits.
statements`) around the generation row. With an `Idempotency-Key` the key's record joins
the statement in a short transaction; without one the statement is atomic on its own.

Each says None when it changed nothing: the ORM path (`app.generation.single`) then runs
and decides why, with every rule and error."""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app import idempotency
from app.accounts.models import Account
from app.config import Settings
from app.credits import statements
from app.credits.views import balance_read
from app.db import StatementRunner, utcnow
from app.generation import repository
from app.generation.calls import record_usage
from app.generation.models import Generation
from app.generation.outcomes import Outcome
from app.generation.providers.base import GenerationKind, ProviderResult
from app.generation.schemas import GenerationCreated
from app.generation.views import charge_description, generation_read


@dataclass(frozen=True)
class FastReserved:
    """A generation the fast path reserved: what its charge needs without reading the rows
    back."""

    generation_id: uuid.UUID
    account: Account
    site_id: uuid.UUID
    kind: GenerationKind
    payload: dict[str, Any]
    hold_id: uuid.UUID
    created_at: datetime
    claim: idempotency.Claim | None
    """The key's record, claimed in the reserve's transaction (None: no key was sent)."""

    @property
    def account_id(self) -> uuid.UUID:
        return self.account.id


class _NotReserved(Exception):
    """The fast reserve changed nothing (raised to roll back the key's claim)."""


async def reserve(
    runner: StatementRunner,
    settings: Settings,
    account: Account,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    request: idempotency.IdempotentRequest,
    generation_id: uuid.UUID,
) -> FastReserved | None:
    """The reserve as one statement (with the key's claim, one transaction). None when it
    did not reserve: nothing changed, and the ORM path decides why (a key used before is
    replayed or waited for there)."""
    hold_id, now = uuid.uuid4(), utcnow()
    expires_at = now + timedelta(seconds=settings.hold_ttl_seconds)

    def bind(record_id: int | None) -> tuple[Any, ...]:
        """$1 to $12 of `repository.RESERVE_GENERATION_SQL`."""
        return (
            account.id,
            site_id,
            generation_id,
            hold_id,
            kind.value,
            now,
            expires_at,
            json.dumps(payload),
            record_id,
            statements.CHANNEL,
            settings.rate_limit_generations_per_minute / 60,
            settings.rate_limit_generations_burst,
        )

    claim: idempotency.Claim | None = None
    try:
        if request.key is None:
            await _reserve_on(runner, bind(None))
        else:
            async with runner.transaction() as connection:
                claim = await idempotency.claim_on_driver(connection, request, now)
                if claim is None:
                    raise _NotReserved
                await _reserve_on(connection, bind(claim.record_id))
    except _NotReserved:
        return None
    statements.count_reserved()
    return FastReserved(generation_id, account, site_id, kind, payload, hold_id, now, claim)


async def _reserve_on(executor: statements.Executor, args: tuple[Any, ...]) -> None:
    if await executor.fetchrow(repository.RESERVE_GENERATION_SQL, *args) is None:
        raise _NotReserved  # the ORM path claims again and raises the reason


async def charge(
    runner: StatementRunner, reserved: FastReserved, answer: ProviderResult
) -> Outcome | None:
    """Charge the credit and record the output in one statement (with storing the key's
    answer, one transaction). None when it changed nothing: the generation is no longer
    running or its hold is no longer open (the ORM path then decides)."""
    now = utcnow()
    generation = Generation(
        id=reserved.generation_id,
        account_id=reserved.account_id,
        site_id=reserved.site_id,
        kind=reserved.kind.value,
        status="succeeded",
        input=reserved.payload,
        output=answer.output,
        hold_id=reserved.hold_id,
        idempotency_record_id=reserved.claim.record_id if reserved.claim else None,
        credits_charged=1,
        created_at=reserved.created_at,
        completed_at=now,
    )
    record_usage(generation, answer.model, answer)
    if reserved.claim is None:
        outcome = await _charge_on(runner, generation, reserved.account, now)
    else:
        async with runner.transaction() as connection:
            outcome = await _charge_on(connection, generation, reserved.account, now)
            if outcome is not None:
                await idempotency.complete_on_driver(
                    connection, reserved.claim, outcome.status_code, outcome.body, now
                )
    if outcome is not None:
        statements.count_settled()
    return outcome


async def _charge_on(
    executor: statements.Executor, generation: Generation, account: Account, now: datetime
) -> Outcome | None:
    balance = await executor.fetchrow(
        repository.CHARGE_GENERATION_SQL,
        generation.id,
        generation.hold_id,
        now,
        json.dumps(generation.output),
        generation.model,
        generation.input_tokens,
        generation.output_tokens,
        generation.latency_ms,
        uuid.uuid4(),
        charge_description(generation.kind),
        statements.CHANNEL,
    )
    if balance is None:
        return None
    created = GenerationCreated(
        **generation_read(generation).model_dump(),
        balance=balance_read(balance["available"], balance["reserved"], account),
    )
    return Outcome(201, created.model_dump(mode="json", by_alias=True))
