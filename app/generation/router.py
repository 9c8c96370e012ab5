import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Header
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.accounts.dependencies import BearerKey, CurrentAccount
from app.accounts.service import SubscriptionInactive, key_lookup_id
from app.credits.events import until_revoked
from app.credits.service import InsufficientCredits
from app.db import Session
from app.deps import Broadcaster
from app.errors import (
    PROBLEM_JSON,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    NotFound,
    Unauthorized,
    problem_responses,
)
from app.generation import batches, single
from app.generation.dependencies import Economy, Runtime
from app.generation.errors import GenerationFailed, GenerationInterrupted, ProviderUnavailable
from app.generation.schemas import (
    BatchCreate,
    BatchDetail,
    BatchProgressEvent,
    BatchRead,
    GenerationCreate,
    GenerationCreated,
    GenerationRead,
)
from app.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH, IdempotentRequestInProgress, Replay
from app.limits import PayloadTooLarge, RateLimited, rate_limit

router = APIRouter(tags=["generations"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="A unique key per intended generation: a retry with it returns the first "
        "answer and is never charged twice.",
    ),
]


def _respond(status_code: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    media_type = PROBLEM_JSON if status_code >= 400 else "application/json"
    return JSONResponse(body, status_code=status_code, headers=headers, media_type=media_type)


@router.post(
    "/v1/generations",
    status_code=201,
    response_model=GenerationCreated,
    dependencies=[Depends(rate_limit("generations"))],
    responses=problem_responses(
        RateLimited,
        PayloadTooLarge,
        Unauthorized,
        InsufficientCredits,
        SubscriptionInactive,
        NotFound,
        IdempotencyKeyReused,
        IdempotentRequestInProgress,
        GenerationFailed,
        ProviderUnavailable,
        GenerationInterrupted,
        DatabaseUnavailable,
    ),
)
async def create_generation(
    body: Annotated[GenerationCreate, Body()],
    account: CurrentAccount,
    runtime: Runtime,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Generate one output for one credit. Every failure costs nothing: `credits_charged` is
    0 and the balance is as before."""
    outcome = await single.create_generation(runtime, account, body, idempotency_key)
    return _respond(outcome.status_code, outcome.body, outcome.headers)


@router.get(
    "/v1/generations/{generation_id}",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_generation(
    generation_id: uuid.UUID, account: CurrentAccount, session: Session
) -> GenerationRead:
    """One generation of the caller's."""
    return await single.get_generation(session, account.id, generation_id)


@router.post(
    "/v1/generation-batches",
    status_code=202,
    dependencies=[Depends(rate_limit("generations"))],
    responses=problem_responses(
        RateLimited,
        PayloadTooLarge,
        Unauthorized,
        InsufficientCredits,
        SubscriptionInactive,
        NotFound,
        IdempotencyKeyReused,
        IdempotentRequestInProgress,
    ),
)
async def create_generation_batch(
    body: Annotated[BatchCreate, Body()],
    account: CurrentAccount,
    session: Session,
    runtime: Runtime,
    after_response: BackgroundTasks,
    economy: Economy,
    idempotency_key: IdempotencyKey = None,
) -> BatchRead:
    """Start a batch: one credit per item is reserved now (all of them, or `402` and none);
    each item that succeeds is charged, each that fails or is canceled is released."""
    batch = await batches.create_batch(session, runtime.settings, account.id, body, idempotency_key)
    if isinstance(batch, Replay):
        return batch.response()  # type: ignore[return-value]
    # Runs after the commit (which precedes the response): the local workers look at once.
    after_response.add_task(runtime.batch_created.set)
    if body.priority == "economy":
        after_response.add_task(economy.nudge.set)
    return batch


@router.get(
    "/v1/generation-batches/{batch_id}",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_generation_batch(
    batch_id: uuid.UUID, account: CurrentAccount, session: Session
) -> BatchDetail:
    """The batch, its counts and every item's status and output."""
    return await batches.get_batch(session, account.id, batch_id)


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id` of the last event received: the stream resumes after it "
        "(on any instance). Missing, malformed or unknown: the current state first.",
    ),
]


async def own_batch(batch_id: uuid.UUID, account: CurrentAccount, runtime: Runtime) -> uuid.UUID:
    """The batch id, if the batch is the caller's (else 404, before the stream starts)."""
    await batches.ensure_batch(runtime.sessionmaker, account.id, batch_id)
    return batch_id


OwnBatch = Annotated[uuid.UUID, Depends(own_batch)]


@router.get(
    "/v1/generation-batches/{batch_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-Sent Events, each with an `id:` (the first also with "
            "`retry:`). `progress`: a `BatchProgressEvent`; without `Last-Event-ID` the first "
            "one is the current state (`item` null), then one per finished item (`item` "
            "null for items canceled together). `done`: the final state, then the stream "
            "ends. `: ping` comments keep the connection open.",
        },
        **problem_responses(Unauthorized, NotFound),
    },
)
async def stream_generation_batch_events(
    batch_id: OwnBatch,
    raw_key: BearerKey,
    runtime: Runtime,
    broadcaster: Broadcaster,
    last_event_id: LastEventId = None,
) -> AsyncIterator[BatchProgressEvent]:
    """Live progress of a batch, from whichever instance works on it; resumable. Ends when
    the API key is revoked."""
    # Revocation is the stream's, not the batch's: it closes the stream here.
    events = until_revoked(
        batches.batch_events(runtime, batch_id, last_event_id),
        broadcaster,
        key_lookup_id(raw_key),
    )
    async for event in events:
        # `ServerSentEvent`s go out as they are; the annotation documents their `data`.
        if event.event is None:
            yield cast(Any, ServerSentEvent(comment="ping"))
        else:
            sent = ServerSentEvent(
                event=event.event, id=event.id, data=event.data, retry=event.retry
            )
            yield cast(Any, sent)


@router.post(
    "/v1/generation-batches/{batch_id}/cancel",
    responses=problem_responses(Unauthorized, NotFound),
)
async def cancel_generation_batch(
    batch_id: uuid.UUID,
    account: CurrentAccount,
    session: Session,
    after_response: BackgroundTasks,
    economy: Economy,
) -> BatchRead:
    """Stop the batch: the credits of items not yet generated are released now; items being
    generated at this moment finish. Canceling a finished batch changes nothing. Economy:
    Anthropic's message batches are canceled and every item not already succeeded is
    released."""
    batch = await batches.cancel_batch(session, account.id, batch_id)
    if batch.priority == "economy":
        # After the commit: Anthropic's cancel (the poller retries it if this one fails).
        after_response.add_task(economy.cancel_at_provider, batch_id)
    return batch
