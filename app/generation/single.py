"""Generations: reserve one credit, call the provider with no transaction open, then
charge it (a usable output) or give it back (anything else).

A single generation runs as a task of its own, shielded from the request: a client that
hangs up does not cut it short, and a retry with the same `Idempotency-Key` gets its stored
result. What is stored for a key: the `201` and a `502 generation_failed`, which are final.
A `503 provider_unavailable` is not: its key is freed, so a retry after `Retry-After` runs
the generation again (nothing was charged the first time). Errors found before any credit
moved (`402`, `403`, `404`, `422`) store nothing either.

On PostgreSQL the reserve and the charge are tried first as one statement each
(`app.generation.fast_path`, a `FastReserved`); when that changes nothing, or on SQLite,
this module's ORM path (a `Reserved`) decides, with every rule and error.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app import idempotency
from app.accounts import service as accounts
from app.accounts.models import Account
from app.config import Settings
from app.credits import service as credits
from app.credits.service import HoldOutcome
from app.credits.views import balance_snapshot
from app.db import utcnow
from app.errors import NotFound, app_error_body, is_database_unavailable
from app.generation import fast_path, rate_bucket, repository
from app.generation.calls import call_provider, record_usage
from app.generation.errors import failure_error
from app.generation.fast_path import FastReserved
from app.generation.limiter import SlotUnavailable
from app.generation.models import Generation
from app.generation.outcomes import Outcome, store, stored_failure_outcome, unrecorded_outcome
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)
from app.generation.runtime import Attempt, GenerationRuntime
from app.generation.schemas import GenerationCreate, GenerationCreated, GenerationRead
from app.generation.views import charge_description, generation_read
from app.idempotency import IdempotentRequestInProgress

logger = logging.getLogger(__name__)

IDEMPOTENCY_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Reserved:
    """A generation the ORM path reserved (its rows are read back to record it)."""

    generation_id: uuid.UUID
    account_id: uuid.UUID
    kind: GenerationKind
    payload: dict[str, Any]


Started = Reserved | FastReserved
"""A generation with its credit held and its row `running`, by either path."""


async def create_generation(
    runtime: GenerationRuntime,
    account: Account,
    body: GenerationCreate,
    idempotency_key: str | None,
) -> Outcome:
    """One generation, start to end, detached from the request (`GenerationRuntime.
    detached`). Raises `AppError`s that leave everything unchanged (402, 403, 404, 409);
    returns the outcome of everything after the credit was reserved."""
    request = idempotency.IdempotentRequest.of(
        idempotency.account_scope(account.id),
        idempotency_key,
        "POST",
        "/v1/generations",
        body.model_dump(mode="json", exclude_none=True),
    )
    attempt = Attempt()
    return await runtime.detached(
        _generate(
            runtime,
            attempt,
            account,
            body.site_id,
            GenerationKind(body.kind),
            body.input.model_dump(mode="json", exclude_none=True),
            request,
        ),
        attempt,
    )


async def _generate(
    runtime: GenerationRuntime,
    attempt: Attempt,
    account: Account,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    request: idempotency.IdempotentRequest,
) -> Outcome:
    generation_id = uuid.uuid4()
    started: Started | Outcome | None = None
    try:
        if runtime.statements is not None and accounts.is_usable(account):
            started = await fast_path.reserve(
                runtime.statements,
                runtime.settings,
                account,
                site_id,
                kind,
                payload,
                request,
                generation_id,
            )
        if started is None:
            started = await _reserve_or_replay(
                runtime, account.id, site_id, kind, payload, request, generation_id
            )
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        # The reserve may have committed before the connection went: find out, and give
        # the credit back, as soon as the database answers.
        logger.error("database unavailable while reserving a generation", exc_info=exc)
        runtime.resolve_later(generation_id)
        return unrecorded_outcome(generation_id, result_at_stake=False)
    if isinstance(started, Outcome):
        return started
    return await _run(runtime, attempt, started)


async def _reserve_or_replay(
    runtime: GenerationRuntime,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    request: idempotency.IdempotentRequest,
    generation_id: uuid.UUID,
) -> Reserved | Outcome:
    """The ORM path: every check with its error, the key's stored answer replayed, and a
    wait while another request with the same key is generating."""
    wait_until = time.monotonic() + runtime.settings.generation_timeout_seconds + 10
    while True:
        async with runtime.sessionmaker() as session, session.begin():
            started = await idempotency.try_begin(session, request)
            if isinstance(started, idempotency.Replay):
                return Outcome(started.status_code, started.body, started.headers)
            if not isinstance(started, idempotency.InProgress):
                return await _reserve(
                    session,
                    runtime.settings,
                    account_id,
                    site_id,
                    kind,
                    payload,
                    started,
                    generation_id,
                )
        # Another request with this key is generating: wait for its stored answer.
        if time.monotonic() > wait_until:
            raise IdempotentRequestInProgress("Retry shortly.", headers={"Retry-After": "5"})
        await asyncio.sleep(IDEMPOTENCY_POLL_SECONDS)


async def _reserve(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    claim: idempotency.Claim | None,
    generation_id: uuid.UUID,
) -> Reserved:
    """The first short transaction: checks, one credit held, the generation `running`."""
    account = await accounts.get_account(session, account_id)
    accounts.ensure_usable(account)
    await accounts.get_site(session, account_id, site_id)
    await rate_bucket.spend_rate_token(session, settings, account_id)
    hold = await credits.reserve(
        session,
        account_id,
        1,
        ttl=timedelta(seconds=settings.hold_ttl_seconds),
        reference=f"generation:{generation_id}",
    )
    await repository.add_generation(
        session,
        Generation(
            id=generation_id,
            account_id=account_id,
            site_id=site_id,
            kind=kind.value,
            status="running",
            input=payload,
            hold_id=hold.id,
            expires_at=hold.expires_at,
            idempotency_record_id=claim.record_id if claim else None,
            credits_charged=0,
            created_at=utcnow(),
        ),
    )
    return Reserved(generation_id, account_id, kind, payload)


async def _run(runtime: GenerationRuntime, attempt: Attempt, started: Started) -> Outcome:
    interrupted = ProviderError(
        FailureKind.FAILED, "interrupted", "The server stopped during the generation."
    )
    if attempt.abandoned:
        return await _record(runtime, started, interrupted)
    attempt.in_provider_call = True
    try:
        async with runtime.limiter.slot(runtime.settings.generation_slot_wait_seconds):
            answer = await call_provider(
                runtime.provider, runtime.settings, started.kind, started.payload
            )
    except SlotUnavailable as busy:
        answer = ProviderError(
            FailureKind.UNAVAILABLE,
            "busy",
            "The AI provider is at its limit right now.",
            retry_after_seconds=busy.retry_after_seconds,
        )
    except asyncio.CancelledError:
        # Shutting down mid-call: give the credit back now rather than at hold expiry.
        attempt.in_provider_call = False
        outcome: Outcome | None = None
        with contextlib.suppress(Exception):
            outcome = await _record(runtime, started, interrupted)
        current = asyncio.current_task()
        if attempt.abandoned and outcome is not None and current is not None:
            current.uncancel()  # the request waiting for us cancelled us, to answer it
            return outcome
        raise
    attempt.in_provider_call = False
    return await _record(runtime, started, answer)


async def _record(
    runtime: GenerationRuntime, started: Started, answer: ProviderResult | ProviderError
) -> Outcome:
    """`_finish`, and when the database fails on the way the truth about it."""
    try:
        return await _finish(runtime, started, answer)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        logger.error("database unavailable while recording a generation", exc_info=exc)
        runtime.resolve_later(started.generation_id)
        return unrecorded_outcome(
            started.generation_id, result_at_stake=isinstance(answer, ProviderResult)
        )


async def _finish(
    runtime: GenerationRuntime, started: Started, answer: ProviderResult | ProviderError
) -> Outcome:
    """The second short transaction: charge the credit or give it back, record the result,
    store the answer for the `Idempotency-Key`."""
    if (
        runtime.statements is not None
        and isinstance(started, FastReserved)
        and isinstance(answer, ProviderResult)
    ):
        charged = await fast_path.charge(runtime.statements, started, answer)
        if charged is not None:
            return charged
    async with runtime.sessionmaker() as session, session.begin():
        generation = await repository.lock_generation(session, started.generation_id)
        if generation.status != "running":
            # The interrupted-generation sweep got here first: the hold is gone, unpaid.
            return stored_failure_outcome(generation)
        now = utcnow()
        generation.completed_at = now
        if isinstance(answer, ProviderResult):
            record_usage(generation, answer.model, answer)
            settled = await credits.settle(
                session,
                generation.hold_id,
                1,
                description=charge_description(generation.kind),
                generation_id=generation.id,
                now=now,
            )
            if settled.outcome is HoldOutcome.SETTLED:
                generation.status = "succeeded"
                generation.output = answer.output
                generation.credits_charged = 1
                await session.flush()
                account = await accounts.get_account(session, started.account_id)
                created = GenerationCreated(
                    **generation_read(generation).model_dump(),
                    balance=await balance_snapshot(session, account),
                )
                outcome = Outcome(201, created.model_dump(mode="json", by_alias=True))
                await store(session, generation, outcome)
                return outcome
            answer = ProviderError(
                FailureKind.FAILED,
                "reservation_expired",
                "The result arrived after the credit reservation had expired.",
            )
        else:
            record_usage(generation, answer.model, answer)
            await credits.release(session, generation.hold_id, now=now)
        error = failure_error(answer, generation.id)
        generation.status = "failed"
        generation.error_code = error.code
        generation.error_detail = f"{answer.reason}: {answer.detail}"
        outcome = Outcome(error.status, app_error_body(error), error.headers)
        await store(session, generation, outcome)
        return outcome


async def get_generation(
    session: AsyncSession, account_id: uuid.UUID, generation_id: uuid.UUID
) -> GenerationRead:
    generation = await repository.get_generation(session, account_id, generation_id)
    if generation is None:
        raise NotFound("No such generation.")
    return generation_read(generation)
