import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from app.accounts.dependencies import AdminAccess
from app.credits.schemas import LedgerEntryRead
from app.cursors import TIME_ID_CURSOR_PATTERN, decode_time_id, encode_time_id
from app.db import Session
from app.errors import NotFound, Unauthorized, problem_responses
from app.support import service
from app.support.schemas import (
    CreditBackCreate,
    SupportGenerationDetail,
    SupportGenerationPage,
    SupportGenerationRead,
    SupportStatus,
)
from app.support.service import AlreadyCreditedBack, NothingToCreditBack

router = APIRouter(tags=["admin"])

_FIELDS = tuple(SupportGenerationRead.model_fields)


RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
"""An RFC 3339 time (an offset may be left out: then UTC). Numbers such as `0.5` are not
times, as a lax parser would take them."""


def _read(row: object) -> SupportGenerationRead:
    return SupportGenerationRead.model_validate({name: getattr(row, name) for name in _FIELDS})


@router.get("/v1/admin/generations", responses=problem_responses(Unauthorized))
async def list_support_generations(
    session: Session,
    _: AdminAccess,
    account_id: Annotated[uuid.UUID | None, Query(description="One account's.")] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            pattern=RFC3339,
            description="Created at or after (RFC 3339).",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            pattern=RFC3339,
            description="Created at or before (RFC 3339).",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    status: Annotated[SupportStatus | None, Query(description="Only this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=TIME_ID_CURSOR_PATTERN, description="`next_cursor` of the last page."),
    ] = None,
) -> SupportGenerationPage:
    """Single generations and batch items alike, newest first, with model, tokens,
    latency and error: what support needs to find the one a customer writes about."""
    rows = await service.list_generations(
        session,
        account_id=account_id,
        created_from=_utc(from_, "from"),
        created_to=_utc(to, "to"),
        status=status,
        limit=limit + 1,
        before=decode_time_id(cursor) if cursor else None,
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    return SupportGenerationPage(
        generations=[_read(row) for row in rows],
        next_cursor=encode_time_id(rows[-1].created_at, rows[-1].id) if has_more else None,
    )


def _utc(text: str | None, field: str) -> datetime | None:
    """The time, in UTC."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a real time, or e.g. 0001-01-01T00:00:00+01:00
        raise RequestValidationError(
            [{"loc": ("query", field), "msg": "out of range", "type": "value_error"}]
        ) from None


@router.get(
    "/v1/admin/generations/{generation_id}", responses=problem_responses(Unauthorized, NotFound)
)
async def get_support_generation(
    generation_id: uuid.UUID, session: Session, _: AdminAccess
) -> SupportGenerationDetail:
    """One generation or batch item, with its ledger entries."""
    found, entries = await service.get_generation(session, generation_id)
    return SupportGenerationDetail(
        **_read(found).model_dump(),
        ledger_entries=[LedgerEntryRead.model_validate(e) for e in entries],
        credited_back=any(e.type == "adjustment" for e in entries),
    )


@router.post(
    "/v1/admin/generations/{generation_id}/credit-back",
    status_code=201,
    responses=problem_responses(Unauthorized, NotFound, AlreadyCreditedBack, NothingToCreditBack),
)
async def credit_back_generation(
    generation_id: uuid.UUID, body: CreditBackCreate, session: Session, _: AdminAccess
) -> LedgerEntryRead:
    """Give a generation's credit back (an `adjustment` of `+credits_charged` carrying its
    `generation_id`), at most once: `409 already_credited_back`; `409
    nothing_to_credit_back` when it charged nothing."""
    entry = await service.credit_back(session, generation_id, body.reason)
    return LedgerEntryRead.model_validate(entry)
