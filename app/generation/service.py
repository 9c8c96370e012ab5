"""Generations: reserve one credit, call the provider with no transaction open, then
charge it (a usable output) or give it back (anything else).

A single generation runs as a task of its own, shielded from the request: a client that
hangs up does not cut it short, and a retry with the same `Idempotency-Key` gets its stored
result. What is stored for a key: the `201` and a `502 generation_failed`, which are final.
A `503 provider_unavailable` is not: its key is freed, so a retry after `Retry-After` runs
the generation again (nothing was charged the first time). Errors found before any credit
moved (`402`, `403`, `404`, `422`) store nothing either.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency, metrics
from app.accounts import service as accounts
from app.accounts.models import Account
from app.config import Settings
from app.credits import repository as credits_repository
from app.credits import service as credits
from app.credits.events import CHANNEL
from app.credits.service import HoldOutcome
from app.credits.views import balance_read, balance_snapshot
from app.db import StatementRunner, utcnow
from app.errors import (
    AppError,
    DatabaseUnavailable,
    NotFound,
    RateLimited,
    app_error_body,
    is_database_unavailable,
)
from app.generation import economy_repository, lifecycle, pricing, queue, repository
from app.generation.events import BatchFeeds, StreamEvent, follow_batch, parse_last_event_id
from app.generation.limiter import AdaptiveLimiter, SlotUnavailable
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    Provider,
    ProviderError,
    ProviderResult,
)
from app.generation.schemas import (
    BatchDetail,
    BatchItemRead,
    BatchRead,
    GenerationCreated,
    GenerationError,
    GenerationRead,
    GenerationUsage,
    SchemaOutput,
    TextOutput,
)
from app.idempotency import IdempotentRequestInProgress

logger = logging.getLogger(__name__)

T = TypeVar("T")

KIND_LABELS = {
    "meta_title": "meta title",
    "meta_description": "meta description",
    "alt_text": "alt text",
    "schema": "schema",
}
IDEMPOTENCY_POLL_SECONDS = 0.1
SHUTDOWN_GRACE_SECONDS = 20.0
ANSWER_AFTER_CANCEL_SECONDS = 5.0
"""How long a cancelled request still waits for its generation's recorded outcome."""
RESOLVE_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


class GenerationFailed(AppError):
    status = 502
    code = "generation_failed"
    title = "The generation failed; no credit was charged"


class ProviderUnavailable(AppError):
    status = 503
    code = "provider_unavailable"
    title = "The AI provider is busy; no credit was charged"


class GenerationInterrupted(AppError):
    status = 503
    code = "generation_interrupted"
    title = "The server stopped during the generation; no credit was charged"


@dataclass
class _Attempt:
    """A detached generation's link to the request waiting for its answer."""

    in_provider_call: bool = False
    abandoned: bool = False
    """The request was cancelled (a server shutting down): nobody will read the answer."""


@dataclass
class GenerationRuntime:
    """What generations need for the app's lifetime: one provider, the session factory, the
    tasks running detached from their requests, and a way to wake the batch workers."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    provider: Provider
    statements: StatementRunner | None = None
    """PostgreSQL: the single generation's reserve and charge run as one statement each."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    batch_created: asyncio.Event = field(default_factory=asyncio.Event)
    unresolved: set[uuid.UUID] = field(default_factory=set)
    """Generations whose recording the database interrupted: failed (uncharged, their key
    freed) as soon as it answers again, unless the interrupted write had committed."""
    _resolver: asyncio.Task[None] | None = None
    limiter: AdaptiveLimiter = field(default_factory=lambda: AdaptiveLimiter(8))
    """The process's gate in front of the provider (batch workers and single generations)."""
    feeds: BatchFeeds = field(init=False)
    """The process's batch event feeds (one poll per followed batch)."""

    def __post_init__(self) -> None:
        self.feeds = BatchFeeds(self.sessionmaker, self.settings.batch_events_interval_seconds)

    async def detached(self, work: Coroutine[Any, Any, T], attempt: _Attempt | None = None) -> T:
        """Run `work` as a task a client that disconnects cannot stop, kept referenced
        until it ends.

        The request itself is cancelled only by the server: uvicorn cancels the requests
        still open when `--timeout-graceful-shutdown` runs out, and would answer each with
        its own plain-text 500. Such a request still answers, and truly: a generation still
        waiting for the model is stopped and given back (nothing charged, `503`), one
        already being recorded is waited for and its real answer sent."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if attempt is None or task.done():
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            attempt.abandoned = True
            if attempt.in_provider_call:
                task.cancel()
            try:
                async with asyncio.timeout(ANSWER_AFTER_CANCEL_SECONDS):
                    return await asyncio.shield(task)
            except TimeoutError:
                # Still not recorded (the database?): the request layer answers 503, and
                # the generation resolves as it can (uncharged unless its charge commits).
                raise asyncio.CancelledError from None

    def resolve_later(self, generation_id: uuid.UUID) -> None:
        """Fail `generation_id` once the database answers again, if it is still running."""
        self.unresolved.add(generation_id)
        if self._resolver is None or self._resolver.done():
            self._resolver = asyncio.create_task(self._resolve_forever(), name="resolver")

    async def _resolve_forever(self) -> None:
        attempt = 0
        while self.unresolved:
            pending = set(self.unresolved)
            try:
                await fail_unrecorded_generations(self.sessionmaker, pending)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    logger.exception("resolving unrecorded generations failed; retrying")
                await asyncio.sleep(RESOLVE_RETRY_SECONDS[min(attempt, 3)])
                attempt += 1
                continue
            self.unresolved -= pending
            attempt = 0

    async def drain(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """At shutdown: let running generations finish, then interrupt the rest (their
        holds are released on the way out, or by the sweeper)."""
        if self._resolver is not None:
            # Left to the sweeper (at hold expiry) if the database is still away.
            self._resolver.cancel()
            await asyncio.gather(self._resolver, return_exceptions=True)
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await self.feeds.close()
        await self.provider.aclose()


@dataclass(frozen=True)
class Outcome:
    """A generation request's HTTP answer: a body to send and, for a key, to store."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_problem(self) -> bool:
        return self.status_code >= 400


@dataclass(frozen=True)
class _Started:
    generation_id: uuid.UUID
    account_id: uuid.UUID
    kind: GenerationKind
    payload: dict[str, Any]
    site_id: uuid.UUID | None = None
    hold_id: uuid.UUID | None = None
    created_at: datetime | None = None
    idempotency_record_id: int | None = None
    account: Account | None = None
    """Set by the fast path: what it needs to charge without reading the rows back."""


def _scope(account_id: uuid.UUID) -> str:
    return f"account:{account_id}"


def _output_read(output: dict[str, Any] | None) -> TextOutput | SchemaOutput | None:
    if output is None:
        return None
    if "schema" in output:
        return SchemaOutput.model_validate({"schema": output["schema"]})
    return TextOutput(text=output["text"])


def _error_read(code: str | None, detail: str | None, reason: str | None = None) -> Any:
    if code is None:
        return None
    return GenerationError(code=code, reason=reason, detail=detail or "")


def _usage_read(row: Generation | GenerationBatchItem) -> GenerationUsage | None:
    if row.latency_ms is None:
        return None
    return GenerationUsage(
        input_tokens=row.input_tokens or 0,
        output_tokens=row.output_tokens or 0,
        latency_ms=row.latency_ms,
    )


def _split_error(detail: str | None) -> tuple[str | None, str | None]:
    """Stored error details are `reason: text`."""
    if detail is None:
        return None, None
    reason, _, text = detail.partition(": ")
    return (reason, text) if text else (None, detail)


def generation_read(generation: Generation) -> GenerationRead:
    reason, detail = _split_error(generation.error_detail)
    return GenerationRead(
        id=generation.id,
        kind=generation.kind,  # type: ignore[arg-type]
        site_id=generation.site_id,
        status=generation.status,  # type: ignore[arg-type]
        output=_output_read(generation.output),
        error=_error_read(generation.error_code, detail, reason),
        credits_charged=generation.credits_charged,
        model=generation.model,
        usage=_usage_read(generation),
        created_at=generation.created_at,
        completed_at=generation.completed_at,
    )


async def get_generation(
    session: AsyncSession, account_id: uuid.UUID, generation_id: uuid.UUID
) -> GenerationRead:
    generation = await repository.get_generation(session, account_id, generation_id)
    if generation is None:
        raise NotFound("No such generation.")
    return generation_read(generation)


def _failure_error(failure: ProviderError, generation_id: uuid.UUID) -> AppError:
    extra: dict[str, Any] = {
        "generation_id": str(generation_id),
        "credits_charged": 0,
        "reason": failure.reason,
    }
    if failure.reason == "interrupted":
        return GenerationInterrupted(
            "The server stopped during the generation. Nothing was charged; try again "
            "(with the same Idempotency-Key, if you sent one).",
            headers={"Retry-After": "1"},
            **extra,
        )
    if failure.kind is FailureKind.UNAVAILABLE:
        retry_after = failure.retry_after_seconds or 30
        return ProviderUnavailable(
            f"{failure.detail} Nothing was charged; try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
            **extra,
        )
    return GenerationFailed(f"{failure.detail} Nothing was charged.", **extra)


async def create_generation(
    runtime: GenerationRuntime,
    account: Account,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
    request_fingerprint: str,
) -> Outcome:
    """One generation, start to end, detached from the request (`GenerationRuntime.
    detached`). Raises `AppError`s that leave everything unchanged (402, 403, 404, 409);
    returns the outcome of everything after the credit was reserved."""
    attempt = _Attempt()
    return await runtime.detached(
        _generate(
            runtime,
            attempt,
            account,
            site_id,
            kind,
            payload,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
        ),
        attempt,
    )


async def _generate(
    runtime: GenerationRuntime,
    attempt: _Attempt,
    account: Account,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
    request_fingerprint: str,
) -> Outcome:
    generation_id = uuid.uuid4()
    started: _Started | Outcome | None = None
    try:
        if runtime.statements is not None and accounts.is_usable(account):
            started = await _reserve_fast(
                runtime,
                account,
                site_id,
                kind,
                payload,
                idempotency_key,
                request_fingerprint,
                generation_id,
            )
        if started is None:
            started = await _reserve_or_replay(
                runtime,
                account.id,
                site_id,
                kind,
                payload,
                idempotency_key,
                request_fingerprint,
                generation_id,
            )
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        # The reserve may have committed before the connection went: find out, and give
        # the credit back, as soon as the database answers.
        logger.error("database unavailable while reserving a generation", exc_info=exc)
        runtime.resolve_later(generation_id)
        return _unrecorded_outcome(generation_id, result_at_stake=False)
    if isinstance(started, Outcome):
        return started
    return await _run(runtime, attempt, started)


def _unrecorded_outcome(generation_id: uuid.UUID, *, result_at_stake: bool) -> Outcome:
    """The truth when the database failed after the reserve may have committed."""
    if result_at_stake:
        detail = (
            "The database stopped answering while this generation's result was being "
            f"recorded. Unless the charge was already recorded (GET /v1/generations/"
            f"{generation_id} then shows it succeeded, with its output), the generation "
            "fails and its credit is given back as soon as the database answers again."
        )
        extra: dict[str, Any] = {"generation_id": str(generation_id)}
    else:
        detail = (
            "The database stopped answering while this generation was starting. Nothing is "
            "charged: a credit held for it, if any, is given back as soon as the database "
            "answers again."
        )
        extra = {"generation_id": str(generation_id), "credits_charged": 0}
    error = DatabaseUnavailable(
        detail + " A retry with the same Idempotency-Key then gets the recorded answer, or "
        "runs it anew.",
        headers={"Retry-After": "5"},
        **extra,
    )
    return Outcome(error.status, app_error_body(error), error.headers)


async def _reserve_or_replay(
    runtime: GenerationRuntime,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    idempotency_key: str | None,
    request_fingerprint: str,
    generation_id: uuid.UUID,
) -> _Started | Outcome:
    """The ORM path: every check with its error, the key's stored answer replayed, and a
    wait while another request with the same key is generating."""
    wait_until = time.monotonic() + runtime.settings.generation_timeout_seconds + 10
    while True:
        async with runtime.sessionmaker() as session, session.begin():
            claim: idempotency.Claim | None = None
            if idempotency_key is not None:
                claimed = await idempotency.claim(
                    session, _scope(account_id), idempotency_key, request_fingerprint
                )
                if isinstance(claimed, idempotency.Replay):
                    return Outcome(claimed.status_code, claimed.body, claimed.headers)
                if isinstance(claimed, idempotency.Claim):
                    claim = claimed
            if idempotency_key is None or claim is not None:
                return await _reserve(
                    session,
                    runtime.settings,
                    account_id,
                    site_id,
                    kind,
                    payload,
                    claim,
                    generation_id,
                )
        # Another request with this key is generating: wait for its stored answer.
        if time.monotonic() > wait_until:
            raise IdempotentRequestInProgress("Retry shortly.", headers={"Retry-After": "5"})
        await asyncio.sleep(IDEMPOTENCY_POLL_SECONDS)


async def _reserve_fast(
    runtime: GenerationRuntime,
    account: Account,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    idempotency_key: str | None,
    request_fingerprint: str,
    generation_id: uuid.UUID,
) -> _Started | None:
    """PostgreSQL: the reserve as one statement (with the key's claim, one transaction).
    None when it did not reserve: nothing changed, and the ORM path decides why."""
    assert runtime.statements is not None
    hold_id, now = uuid.uuid4(), utcnow()
    expires_at = now + timedelta(seconds=runtime.settings.hold_ttl_seconds)
    try:
        async with _one_statement_or_transaction(runtime.statements, idempotency_key) as executor:
            record_id = await _reserve_statements(
                executor,
                account_id=account.id,
                site_id=site_id,
                generation_id=generation_id,
                hold_id=hold_id,
                kind=kind,
                payload=payload,
                now=now,
                expires_at=expires_at,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
                rate_per_second=runtime.settings.rate_limit_generations_per_minute / 60,
                rate_burst=runtime.settings.rate_limit_generations_burst,
            )
    except _NotReserved:
        return None
    metrics.count_credits("reserved", "hold", 1)
    return _Started(
        generation_id,
        account.id,
        kind,
        payload,
        site_id=site_id,
        hold_id=hold_id,
        created_at=now,
        idempotency_record_id=record_id,
        account=account,
    )


class _NotReserved(Exception):
    """The fast reserve changed nothing (raised to roll back the key's claim)."""


def _one_statement_or_transaction(
    statements: StatementRunner, key: str | int | None
) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection | StatementRunner]:
    """Without an `Idempotency-Key` the fast path is one statement, atomic on its own; with
    one, the key's record joins it in a transaction."""
    if key is None:
        return contextlib.nullcontext(statements)
    return statements.transaction()


async def _reserve_statements(
    connection: asyncpg.Connection | StatementRunner,
    *,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    generation_id: uuid.UUID,
    hold_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    now: datetime,
    expires_at: datetime,
    idempotency_key: str | None,
    request_fingerprint: str,
    rate_per_second: float,
    rate_burst: int,
) -> int | None:
    """Claim the key (if any) and reserve; the idempotency record's id, if any."""
    record_id: int | None = None
    if idempotency_key is not None:
        assert isinstance(connection, asyncpg.Connection)  # the claim joins a transaction
        record_id = await connection.fetchval(
            repository.CLAIM_IDEMPOTENCY_KEY_SQL,
            _scope(account_id),
            idempotency_key,
            request_fingerprint,
            now,
        )
        if record_id is None:
            raise _NotReserved  # used before: the ORM path replays or waits
    reserved = await connection.fetchrow(
        repository.RESERVE_GENERATION_SQL,
        account_id,
        site_id,
        generation_id,
        hold_id,
        kind.value,
        now,
        expires_at,
        json.dumps(payload),
        record_id,
        CHANNEL,
        rate_per_second,
        rate_burst,
    )
    if reserved is None:
        raise _NotReserved  # the ORM path claims again and raises the reason
    return record_id


async def _reserve(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payload: dict[str, Any],
    claim: idempotency.Claim | None,
    generation_id: uuid.UUID,
) -> _Started:
    """The first short transaction: checks, one credit held, the generation `running`."""
    account = await accounts.get_account(session, account_id)
    accounts.ensure_usable(account)
    await accounts.get_site(session, account_id, site_id)
    await _spend_rate_token(session, settings, account_id)
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
    return _Started(generation_id, account_id, kind, payload)


async def _spend_rate_token(
    session: AsyncSession, settings: Settings, account_id: uuid.UUID
) -> None:
    """PostgreSQL: one token of the account's generation bucket (in its balance row, for
    every process and instance), or `RateLimited`. A request refused later in the same
    transaction (402) gives it back with the rollback: only reservations spend tokens.
    SQLite: the route's in-process bucket already decided."""
    if settings.is_sqlite:
        return
    wait = await credits_repository.spend_rate_token(
        session,
        account_id,
        now=utcnow(),
        per_second=settings.rate_limit_generations_per_minute / 60,
        burst=settings.rate_limit_generations_burst,
    )
    if wait > 0:
        raise RateLimited.wait("generations", wait)


async def call_provider(
    provider: Provider, settings: Settings, kind: GenerationKind, payload: dict[str, Any]
) -> ProviderResult | ProviderError:
    """The provider's answer, or why there is none. Holds no database connection.
    Counted in the metrics: latency per provider and kind, outcome per kind, error class."""
    started = time.perf_counter()
    answer = await _call_provider(provider, settings, kind, payload)
    count_usage(settings, kind, answer, "standard")
    provider_name = provider.model
    metrics.PROVIDER_SECONDS.labels(provider_name, kind.value).observe(
        time.perf_counter() - started
    )
    if isinstance(answer, ProviderResult):
        metrics.GENERATIONS.labels(kind.value, "succeeded").inc()
    else:
        metrics.GENERATIONS.labels(kind.value, answer.kind.value).inc()
        metrics.PROVIDER_ERRORS.labels(provider_name, answer.reason).inc()
    return answer


def count_usage(
    settings: Settings, kind: GenerationKind, usage: ProviderResult | ProviderError, priority: str
) -> None:
    """The tokens and model cost of a provider answer, in the metrics."""
    cost = pricing.exact_cost_usd_micros(
        pricing.price_table(settings),
        usage.model,
        priority,
        usage.input_tokens,
        usage.output_tokens,
    )
    metrics.count_provider_usage(
        kind.value, usage.model, priority, usage.input_tokens, usage.output_tokens, cost
    )


async def _call_provider(
    provider: Provider, settings: Settings, kind: GenerationKind, payload: dict[str, Any]
) -> ProviderResult | ProviderError:
    try:
        async with asyncio.timeout(settings.generation_timeout_seconds):
            return await provider.generate(kind, payload)
    except ProviderError as exc:
        return exc
    except TimeoutError:
        return ProviderError(
            FailureKind.FAILED, "timeout", "The generation took too long.", model=provider.model
        )
    except Exception:
        logger.exception("generation provider crashed")
        return ProviderError(
            FailureKind.FAILED,
            "internal_error",
            "The generation failed on our side.",
            model=provider.model,
        )


async def _run(runtime: GenerationRuntime, attempt: _Attempt, started: _Started) -> Outcome:
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
    runtime: GenerationRuntime, started: _Started, answer: ProviderResult | ProviderError
) -> Outcome:
    """`_finish`, and when the database fails on the way the truth about it."""
    try:
        return await _finish(runtime, started, answer)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        logger.error("database unavailable while recording a generation", exc_info=exc)
        runtime.resolve_later(started.generation_id)
        return _unrecorded_outcome(
            started.generation_id, result_at_stake=isinstance(answer, ProviderResult)
        )


async def _finish(
    runtime: GenerationRuntime, started: _Started, answer: ProviderResult | ProviderError
) -> Outcome:
    """The second short transaction: charge the credit or give it back, record the result,
    store the answer for the `Idempotency-Key`."""
    if (
        runtime.statements is not None
        and started.hold_id is not None
        and isinstance(answer, ProviderResult)
    ):
        charged = await _charge_fast(runtime, started, answer)
        if charged is not None:
            return charged
    async with runtime.sessionmaker() as session, session.begin():
        generation = await repository.lock_generation(session, started.generation_id)
        if generation.status != "running":
            # The interrupted-generation sweep got here first: the hold is gone, unpaid.
            return _stored_failure_outcome(generation)
        now = utcnow()
        generation.completed_at = now
        if isinstance(answer, ProviderResult):
            _record_usage(generation, answer.model, answer)
            settled = await credits.settle(
                session,
                generation.hold_id,
                1,
                description=f"AI generation: {KIND_LABELS[generation.kind]}",
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
                await _store(session, generation, outcome)
                return outcome
            answer = ProviderError(
                FailureKind.FAILED,
                "reservation_expired",
                "The result arrived after the credit reservation had expired.",
            )
        else:
            _record_usage(generation, answer.model, answer)
            await credits.release(session, generation.hold_id, now=now)
        error = _failure_error(answer, generation.id)
        generation.status = "failed"
        generation.error_code = error.code
        generation.error_detail = f"{answer.reason}: {answer.detail}"
        outcome = Outcome(error.status, app_error_body(error), error.headers)
        await _store(session, generation, outcome)
        return outcome


async def _charge_fast(
    runtime: GenerationRuntime, started: _Started, answer: ProviderResult
) -> Outcome | None:
    """PostgreSQL: charge the credit and record the output in one statement (with storing
    the key's answer, one transaction). None when it changed nothing: the generation is no
    longer running or its hold is no longer open (the ORM path then decides)."""
    assert runtime.statements is not None and started.account is not None
    now = utcnow()
    generation = Generation(
        id=started.generation_id,
        account_id=started.account_id,
        site_id=started.site_id,
        kind=started.kind.value,
        status="succeeded",
        input=started.payload,
        output=answer.output,
        hold_id=started.hold_id,
        idempotency_record_id=started.idempotency_record_id,
        credits_charged=1,
        created_at=started.created_at,
        completed_at=now,
    )
    _record_usage(generation, answer.model, answer)
    record_id = started.idempotency_record_id
    async with _one_statement_or_transaction(runtime.statements, record_id) as executor:
        outcome = await _charge_statement(executor, generation, started.account, now)
        if outcome is not None and record_id is not None:
            assert isinstance(executor, asyncpg.Connection)
            await executor.execute(
                repository.COMPLETE_IDEMPOTENCY_KEY_SQL,
                record_id,
                outcome.status_code,
                json.dumps(outcome.body),
                now,
            )
    if outcome is not None:
        metrics.count_credits("consumed", "consumption", 1)
    return outcome


async def _charge_statement(
    connection: asyncpg.Connection | StatementRunner,
    generation: Generation,
    account: Account,
    now: datetime,
) -> Outcome | None:
    balance = await connection.fetchrow(
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
        f"AI generation: {KIND_LABELS[generation.kind]}",
        CHANNEL,
    )
    if balance is None:
        return None
    created = GenerationCreated(
        **generation_read(generation).model_dump(),
        balance=balance_read(balance["available"], balance["reserved"], account),
    )
    return Outcome(201, created.model_dump(mode="json", by_alias=True))


def _record_usage(
    generation: Generation, model: str | None, usage: ProviderResult | ProviderError
) -> None:
    generation.model = model
    generation.input_tokens = usage.input_tokens
    generation.output_tokens = usage.output_tokens
    if isinstance(usage, ProviderResult):
        generation.latency_ms = usage.latency_ms
    elif generation.created_at is not None and generation.completed_at is not None:
        elapsed = generation.completed_at - generation.created_at
        generation.latency_ms = round(elapsed.total_seconds() * 1000)


async def _store(session: AsyncSession, generation: Generation, outcome: Outcome) -> None:
    if generation.idempotency_record_id is None:
        return
    claim = idempotency.Claim(generation.idempotency_record_id)
    if outcome.status_code == 503:  # provider unavailable, interrupted, database
        # Not final: free the key so a retry after Retry-After generates again.
        generation.idempotency_record_id = None
        await session.flush()
        await idempotency.abandon(session, claim)
        return
    await idempotency.complete(session, claim, outcome.status_code, outcome.body)


def _stored_failure_outcome(generation: Generation) -> Outcome:
    error = GenerationFailed(
        "The generation was interrupted. Nothing was charged.",
        generation_id=str(generation.id),
        credits_charged=0,
        reason="interrupted",
    )
    return Outcome(error.status, app_error_body(error))


async def fail_interrupted_generations(
    sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 500
) -> int:
    """Generations whose process died mid-call: release their hold (if the sweeper has not),
    mark them failed and store that answer for their `Idempotency-Key`."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            now = utcnow()
            interrupted = await repository.lock_interrupted_generations(session, now, limit)
            for generation in interrupted:
                await _fail_running(
                    session,
                    generation,
                    now,
                    "interrupted: The generation was interrupted.",
                    _stored_failure_outcome(generation),
                )
        total += len(interrupted)
        if len(interrupted) < limit:
            return total


async def fail_unrecorded_generations(
    sessionmaker: async_sessionmaker[AsyncSession], generation_ids: Collection[uuid.UUID]
) -> int:
    """Generations whose recording the database interrupted (`_unrecorded_outcome`): those
    still running are failed, their credit released and their key freed; those whose
    write did commit before the connection went are left as they are."""
    async with sessionmaker() as session, session.begin():
        now = utcnow()
        running = await repository.lock_running_generations(session, list(generation_ids))
        for generation in running:
            await _fail_running(
                session,
                generation,
                now,
                "database_unavailable: The database stopped answering during the generation.",
                _unrecorded_outcome(generation.id, result_at_stake=False),
            )
    return len(running)


async def _fail_running(
    session: AsyncSession, generation: Generation, now: datetime, detail: str, outcome: Outcome
) -> None:
    """A running generation that will not finish: its credit back, failed, its key's answer."""
    await credits.release(session, generation.hold_id, now=now)
    generation.status = "failed"
    generation.error_code = str(outcome.body["code"])
    generation.error_detail = detail
    generation.completed_at = now
    await _store(session, generation, outcome)


# --- batches ---


def batch_read(batch: GenerationBatch, counts: dict[str, int]) -> BatchRead:
    succeeded = counts.get("succeeded", 0)
    failed = counts.get("failed", 0)
    canceled = counts.get("canceled", 0)
    return BatchRead(
        id=batch.id,
        kind=batch.kind,  # type: ignore[arg-type]
        site_id=batch.site_id,
        status=batch.status,  # type: ignore[arg-type]
        priority=batch.priority,  # type: ignore[arg-type]
        total=batch.total,
        succeeded=succeeded,
        failed=failed,
        canceled=canceled,
        pending=batch.total - succeeded - failed - canceled,
        credits_charged=succeeded,
        created_at=batch.created_at,
        completed_at=batch.completed_at,
        canceled_at=batch.canceled_at,
    )


def item_read(item: GenerationBatchItem) -> BatchItemRead:
    reason, detail = _split_error(item.error_detail)
    return BatchItemRead(
        index=item.index,
        status=lifecycle.published(item.status),  # type: ignore[arg-type]
        output=_output_read(item.output),
        error=_error_read(item.error_code, detail, reason),
    )


async def create_batch(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: GenerationKind,
    payloads: list[dict[str, Any]],
    priority: str = "standard",
) -> BatchRead:
    """Every item's credit reserved at once (one hold each), or `InsufficientCredits` and
    nothing at all. The workers take it from here (economy: `app.generation.economy`)."""
    account = await accounts.get_account(session, account_id)
    accounts.ensure_usable(account)
    await accounts.get_site(session, account_id, site_id)
    await _spend_rate_token(session, settings, account_id)
    batch_id = uuid.uuid4()
    holds = await credits.reserve_many(
        session,
        account_id,
        [1] * len(payloads),
        ttl=timedelta(seconds=settings.batch_hold_ttl_seconds),
        references=[f"batch:{batch_id}:{index}" for index in range(len(payloads))],
    )
    now = utcnow()
    batch = GenerationBatch(
        id=batch_id,
        account_id=account_id,
        site_id=site_id,
        kind=kind.value,
        status="queued",
        total=len(payloads),
        priority=priority,
        created_at=now,
    )
    items = [
        {
            "batch_id": batch_id,
            "index": index,
            "input": payload,
            "status": "queued",
            "hold_id": hold.id,
            "credits_charged": 0,
            "attempts": 0,
            "priority": priority,
        }
        for index, (payload, hold) in enumerate(zip(payloads, holds, strict=True))
    ]
    await repository.add_batch(session, batch, items)
    return batch_read(batch, {})


async def _load_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> GenerationBatch:
    batch = await repository.get_batch(session, account_id, batch_id)
    if batch is None:
        raise NotFound("No such generation batch.")
    return batch


async def get_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> BatchDetail:
    batch = await _load_batch(session, account_id, batch_id)
    items = await repository.list_items(session, batch_id)
    counts: dict[str, int] = {}
    for item in items:
        status = lifecycle.published(item.status)
        counts[status] = counts.get(status, 0) + 1
    return BatchDetail(
        **batch_read(batch, counts).model_dump(), items=[item_read(i) for i in items]
    )


async def cancel_batch(
    session: AsyncSession, account_id: uuid.UUID, batch_id: uuid.UUID
) -> BatchRead:
    """Stop the batch: every item whose model call has not started (queued, or claimed by a
    worker of any instance) is canceled and its credit released, in this transaction; a
    worker moves an item to `generating` only while its batch is not canceled, so once this
    commits no call starts. Calls already in flight finish (and are charged if they
    succeed)."""
    await _load_batch(session, account_id, batch_id)
    batch = await repository.lock_batch(session, batch_id)
    if batch.status in repository.ACTIVE_BATCH_STATUSES:
        now = utcnow()
        batch.status = "canceled"
        batch.canceled_at = now
        hold_ids = await queue.cancel_unstarted_items(session, batch, now)
        if batch.priority == "economy":
            hold_ids += await economy_repository.cancel_submitted_items(session, batch_id, now)
            await queue.number_finished_items(session, batch)
        await credits.release_many(session, hold_ids, now=now)
        await session.flush()
    return batch_read(batch, await repository.item_counts(session, batch_id))


async def ensure_batch(
    sessionmaker: async_sessionmaker[AsyncSession], account_id: uuid.UUID, batch_id: uuid.UUID
) -> None:
    """`NotFound` unless the batch is the account's (in a short session of its own, so a
    stream holds no connection)."""
    async with sessionmaker() as session:
        await _load_batch(session, account_id, batch_id)


def batch_events(
    runtime: GenerationRuntime, batch_id: uuid.UUID, last_event_id: str | None
) -> AsyncIterator[StreamEvent]:
    """The batch's events (see `app.generation.events.follow_batch`), from this process's
    one feed of the batch, which follows workers on every instance."""
    return follow_batch(
        runtime.feeds,
        batch_id,
        parse_last_event_id(last_event_id),
        ping_seconds=runtime.settings.sse_ping_interval_seconds,
        snapshot=lambda batch, counts: batch_read(batch, counts).model_dump(mode="json"),
    )
