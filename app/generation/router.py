import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app import idempotency
from app.accounts.dependencies import CurrentAccount
from app.accounts.service import SubscriptionInactive
from app.credits.service import InsufficientCredits
from app.db import Session
from app.errors import (
    PROBLEM_JSON,
    IdempotencyKeyReused,
    NotFound,
    Unauthorized,
    problem_responses,
)
from app.generation import service
from app.generation.economy import EconomyBatches
from app.generation.providers.base import GenerationKind
from app.generation.schemas import (
    BatchCreate,
    BatchDetail,
    BatchRead,
    GenerationCreate,
    GenerationCreated,
    GenerationRead,
)
from app.generation.service import GenerationFailed, GenerationRuntime, ProviderUnavailable
from app.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH, IdempotentRequestInProgress
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


async def get_runtime(request: Request) -> GenerationRuntime:
    runtime: GenerationRuntime = request.app.state.generation
    return runtime


Runtime = Annotated[GenerationRuntime, Depends(get_runtime)]


def economy_of(request: Request) -> EconomyBatches:
    economy: EconomyBatches = request.app.state.economy
    return economy


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
    payload = body.input.model_dump(mode="json", exclude_none=True)
    fingerprint = idempotency.fingerprint(
        "POST", "/v1/generations", body.model_dump(mode="json", exclude_none=True)
    )
    outcome = await runtime.detached(
        service.create_generation(
            runtime,
            account,
            body.site_id,
            GenerationKind(body.kind),
            payload,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
        )
    )
    return _respond(outcome.status_code, outcome.body, outcome.headers)


@router.get(
    "/v1/generations/{generation_id}",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_generation(
    generation_id: uuid.UUID, account: CurrentAccount, session: Session
) -> GenerationRead:
    """One generation of the caller's."""
    return await service.get_generation(session, account.id, generation_id)


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
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> BatchRead:
    """Start a batch: one credit per item is reserved now (all of them, or `402` and none);
    each item that succeeds is charged, each that fails or is canceled is released."""
    claim = None
    if idempotency_key is not None:
        fingerprint = idempotency.fingerprint(
            "POST", "/v1/generation-batches", body.model_dump(mode="json", exclude_none=True)
        )
        found = await idempotency.claim(
            session, f"account:{account.id}", idempotency_key, fingerprint
        )
        if isinstance(found, idempotency.Replay):
            return _respond(found.status_code, found.body)  # type: ignore[return-value]
        if isinstance(found, idempotency.InProgress):
            raise IdempotentRequestInProgress("Retry shortly.", headers={"Retry-After": "1"})
        claim = found
    batch = await service.create_batch(
        session,
        runtime.settings,
        account.id,
        body.site_id,
        GenerationKind(body.kind),
        [item.model_dump(mode="json", exclude_none=True) for item in body.items],
        body.priority or "standard",
    )
    if claim is not None:
        await idempotency.complete(session, claim, 202, batch.model_dump(mode="json"))
    # Runs after the commit (which precedes the response): the local workers look at once.
    after_response.add_task(runtime.batch_created.set)
    if body.priority == "economy":
        after_response.add_task(economy_of(request).nudge.set)
    return batch


@router.get(
    "/v1/generation-batches/{batch_id}",
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_generation_batch(
    batch_id: uuid.UUID, account: CurrentAccount, session: Session
) -> BatchDetail:
    """The batch, its counts and every item's status and output."""
    return await service.get_batch(session, account.id, batch_id)


@router.get(
    "/v1/generation-batches/{batch_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `progress` (the batch and the item that just "
            "finished; the first one carries the current state and no item), then `done`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(Unauthorized, NotFound),
    },
)
async def stream_generation_batch_events(
    batch_id: uuid.UUID, account: CurrentAccount, runtime: Runtime
) -> StreamingResponse:
    """Live progress of a batch, from whichever instance works on it."""
    events = await service.batch_events(
        runtime.sessionmaker, runtime.settings, account.id, batch_id
    )
    return StreamingResponse(
        _server_sent(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _server_sent(
    events: AsyncIterator[tuple[str, dict[str, Any] | None]],
) -> AsyncIterator[str]:
    async for event, data in events:
        if data is None:
            yield ": ping\n\n"
        else:
            yield f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.post(
    "/v1/generation-batches/{batch_id}/cancel",
    responses=problem_responses(Unauthorized, NotFound),
)
async def cancel_generation_batch(
    batch_id: uuid.UUID,
    account: CurrentAccount,
    session: Session,
    request: Request,
    after_response: BackgroundTasks,
) -> BatchRead:
    """Stop the batch: the credits of items not yet generated are released now; items being
    generated at this moment finish. Canceling a finished batch changes nothing. Economy:
    Anthropic's message batches are canceled and every item not already succeeded is
    released."""
    batch = await service.cancel_batch(session, account.id, batch_id)
    if batch.priority == "economy":
        # After the commit: Anthropic's cancel (the poller retries it if this one fails).
        after_response.add_task(economy_of(request).cancel_at_provider, batch_id)
    return batch
