import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse

from app import flows, idempotency
from app.accounts import service as accounts
from app.accounts.dependencies import AdminAccess, BearerKey, CurrentAccount, mark_authenticated
from app.credits import adjustments
from app.credits.events import BalanceBroadcaster, BalanceEvent
from app.credits.schemas import (
    AdjustmentCreate,
    BalanceRead,
    EstimateRead,
    LedgerEntryRead,
    LedgerPage,
)
from app.credits.service import InsufficientCreditsToTake
from app.credits.views import CURSOR_PATTERN, balance_for_key, ledger_page
from app.db import Session
from app.deps import AppSettings, Broadcaster, ReadEngine
from app.errors import IdempotencyKeyReused, NotFound, Unauthorized, problem_responses
from app.idempotency import ADMIN_SCOPE, IDEMPOTENCY_KEY_MAX_LENGTH, IdempotentRequestInProgress

router = APIRouter()

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id` of the last event received, when reconnecting: the balance is "
        "sent only if it changed since. An unknown or malformed id counts as none.",
    ),
]


def balance_event_item_schema() -> dict[str, Any]:
    """OpenAPI: what each event of `/v1/balance/events` carries."""
    return {
        "type": "object",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"const": "balance"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/BalanceRead"},
                "description": "The JSON of `GET /v1/balance`.",
            },
            "id": {
                "type": "string",
                "description": "Names the balance it carries; send it back as `Last-Event-ID`.",
            },
            "retry": {
                "type": "integer",
                "minimum": 0,
                "description": "On the first event of a connection: reconnect after this "
                "many milliseconds.",
            },
        },
    }


LedgerLimit = Annotated[int, Query(ge=1, le=200, description="Entries per page.")]
LedgerCursor = Annotated[
    str | None,
    Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page."),
]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="Required. A unique key per intended adjustment; a retry with it is not "
        "applied twice (the stored answer comes back with `Idempotency-Replayed: true`).",
    ),
]


@router.get(
    "/v1/balance",
    tags=["balance"],
    responses=problem_responses(Unauthorized),
)
async def get_balance(
    request: Request, raw_key: BearerKey, response: Response, read_engine: ReadEngine
) -> BalanceRead:
    """The account's credit balance and badge text; never cached."""
    async with read_engine.connect() as connection:
        found = await balance_for_key(connection, raw_key)
    if found is None:
        raise Unauthorized(
            "The API key is unknown or revoked.", headers={"WWW-Authenticate": "Bearer"}
        )
    account_id, balance = found
    mark_authenticated(request, account_id)
    response.headers["Cache-Control"] = "no-store"
    return balance


@router.get(
    "/v1/balance/events",
    tags=["balance"],
    # The route returns its `EventSourceResponse` itself (its events are formatted once per
    # change, for every stream): the class here only keeps the document to `responses`.
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`event: balance` with a `BalanceRead` body (its `data` is the JSON "
            "of `GET /v1/balance`) on connect and after every change, each with an `id`; "
            "the first event of a connection carries `retry`; `: ping` comments in between. "
            "The stream ends when its API key is revoked.",
            "content": {"text/event-stream": {"itemSchema": balance_event_item_schema()}},
        },
        **problem_responses(Unauthorized),
    },
)
async def stream_balance(
    account: CurrentAccount,
    raw_key: BearerKey,
    broadcaster: Broadcaster,
    settings: AppSettings,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Server-Sent Events: the balance on connect and within a second of every change
    (purchases, generations, adjustments, refunds), from any server instance. With
    `Last-Event-ID`, the balance on connect only if it changed since that event."""
    events = _balance_stream(
        broadcaster,
        account.id,
        accounts.key_lookup_id(raw_key),
        last_event_id,
        settings.balance_heartbeat_seconds,
    )
    return EventSourceResponse(
        events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _balance_stream(
    broadcaster: BalanceBroadcaster,
    account_id: uuid.UUID,
    key: str | None,
    last_event_id: str | None,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    """The stream's bytes. Each change's event was formatted once (FastAPI's SSE format)
    for every stream of the account: a stream only writes it, so a change reaches thousands
    of them at the cost of a write each (docs/benchmarks.md)."""
    # Subscribe before the first read, so no change (or revocation) can fall between.
    with broadcaster.subscribe(account_id, key) as subscription:
        if await broadcaster.is_revoked(key):
            return
        sent, first = last_event_id, True
        latest: BalanceEvent | None = await broadcaster.current(account_id)
        while True:
            if latest is not None and latest.id != sent:
                yield latest.first_wire if first else latest.wire
                sent, first = latest.id, False
            # A client that goes away is noticed by the response itself, which then
            # cancels this generator: nothing to poll here.
            if not await subscription.wait(heartbeat_seconds):
                yield KEEPALIVE_COMMENT
            if subscription.revoked:
                return
            latest = subscription.latest


@router.get(
    "/v1/ledger",
    tags=["balance"],
    responses=problem_responses(Unauthorized),
)
async def list_ledger(
    account: CurrentAccount, session: Session, limit: LedgerLimit = 50, cursor: LedgerCursor = None
) -> LedgerPage:
    """The account's ledger, newest first, one page at a time."""
    return await ledger_page(session, account, limit=limit, cursor=cursor)


@router.get(
    "/v1/estimate",
    tags=["balance"],
    responses=problem_responses(Unauthorized),
)
async def estimate_credits(
    account: CurrentAccount,
    session: Session,
    pages: Annotated[int, Query(ge=0, le=1_000_000, description="Pages to cover.")] = 0,
    images: Annotated[int, Query(ge=0, le=1_000_000, description="Images needing alt text.")] = 0,
    schema: Annotated[bool, Query(description="Also a schema field set per page.")] = False,
) -> EstimateRead:
    """Credits for a full pass over a site: a meta title and description per page, alt text
    per image, optionally a schema per page (one credit each), and the package to buy."""
    return await flows.estimate(session, account, pages=pages, images=images, schema=schema)


@router.post(
    "/v1/admin/accounts/{account_id}/adjustments",
    tags=["admin"],
    status_code=201,
    responses=problem_responses(
        Unauthorized,
        NotFound,
        InsufficientCreditsToTake,
        IdempotencyKeyReused,
        IdempotentRequestInProgress,
    ),
)
async def create_adjustment(
    account_id: uuid.UUID,
    body: AdjustmentCreate,
    idempotency_key: IdempotencyKey,
    session: Session,
    _: AdminAccess,
) -> LedgerEntryRead:
    """Add or take away credits by hand, with a reason for the audit trail.

    A negative adjustment larger than `available` is `409 insufficient_credits`."""
    request = idempotency.IdempotentRequest.of(
        ADMIN_SCOPE,
        idempotency_key,
        "POST",
        f"/v1/admin/accounts/{account_id}/adjustments",
        body.model_dump(mode="json"),
    )
    outcome = await adjustments.adjust(session, account_id, body, request)
    if isinstance(outcome, idempotency.Replay):
        return outcome.response()  # type: ignore[return-value]
    return outcome


@router.get(
    "/v1/admin/accounts/{account_id}/ledger",
    tags=["admin"],
    responses=problem_responses(Unauthorized, NotFound),
)
async def list_account_ledger(
    account_id: uuid.UUID,
    session: Session,
    _: AdminAccess,
    limit: LedgerLimit = 50,
    cursor: LedgerCursor = None,
) -> LedgerPage:
    """Any account's ledger, as the account sees it at `/v1/ledger`."""
    account = await accounts.get_account(session, account_id)
    return await ledger_page(session, account, limit=limit, cursor=cursor)
