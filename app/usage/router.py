import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from app.accounts import service as accounts
from app.accounts.dependencies import AdminAccess, CurrentAccount
from app.db import Session, utcnow
from app.deps import Engine
from app.errors import NotFound, Unauthorized, problem_responses
from app.usage import service
from app.usage.schemas import GroupBy, UsageBucket, UsageRead
from app.usage.service import MAX_RANGE_DAYS, DateRange

router = APIRouter(tags=["usage"])

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# A real date (`format: date`) in the `YYYY-MM-DD` spelling only (the pattern): no times.
DateParam = Annotated[
    str | None,
    Query(
        pattern=DATE_PATTERN,
        description="`YYYY-MM-DD` (UTC, inclusive).",
        json_schema_extra={"format": "date"},
    ),
]
FromParam = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=DATE_PATTERN,
        description="`YYYY-MM-DD` (UTC, inclusive).",
        json_schema_extra={"format": "date"},
    ),
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


def _dates(from_: str | None, to: str | None) -> tuple[date | None, date | None]:
    parsed: list[date | None] = []
    for name, value in (("from", from_), ("to", to)):
        try:
            parsed.append(date.fromisoformat(value) if value is not None else None)
        except ValueError:
            raise _invalid(name, "must be a real date, YYYY-MM-DD") from None
    first, last = parsed
    if first is not None and last is not None and first > last:
        raise _invalid("from", "must not be after `to`")
    return first, last


def _usage_range(from_: str | None, to: str | None) -> DateRange:
    """As asked; a missing `to` is today (at most 366 days after `from`), a missing `from`
    30 days before `to`. Both given and more than 366 days apart: 422."""
    first, last = _dates(from_, to)
    if last is None:
        last = utcnow().date()
        if first is not None:
            widest = timedelta(days=MAX_RANGE_DAYS - 1)
            last = max(first, min(last, first + widest if date.max - first > widest else last))
    if first is None:
        span = timedelta(days=service.DEFAULT_RANGE_DAYS - 1)
        first = last - span if last - date.min > span else date.min
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise _invalid("from", f"the range is at most {MAX_RANGE_DAYS} days")
    return DateRange(first, last)


def _export_range(from_: str | None, to: str | None) -> DateRange | None:
    """As asked, open on a missing end; None for everything."""
    first, last = _dates(from_, to)
    if first is None and last is None:
        return None
    return DateRange(first or date.min, last or date.max - timedelta(days=1))


@router.get("/v1/usage", responses=problem_responses(Unauthorized))
async def get_usage(
    account: CurrentAccount,
    session: Session,
    group_by: Annotated[GroupBy, Query(description="Bucket by day, site or kind.")] = "day",
    from_: FromParam = None,
    to: DateParam = None,
) -> UsageRead:
    """Credits consumed by completed generations, per day, site or kind, over a range of
    UTC days (default the last 30; at most 366)."""
    days = _usage_range(from_, to)
    buckets = await service.usage(session, account.id, group_by, days)
    return UsageRead(
        group_by=group_by,
        from_=days.first,
        to=days.last,
        buckets=[
            UsageBucket(key=b.key, credits=b.credits, generations=b.generations) for b in buckets
        ],
        total_credits=sum(b.credits for b in buckets),
    )


def _csv(account_id: uuid.UUID, rows: AsyncIterator[bytes]) -> StreamingResponse:
    name = f"ledger-{account_id}.csv"
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/v1/ledger/export",
    response_class=StreamingResponse,
    responses={**CSV_RESPONSE, **problem_responses(Unauthorized)},
)
async def export_ledger(
    engine: Engine, account: CurrentAccount, from_: FromParam = None, to: DateParam = None
) -> StreamingResponse:
    """The account's ledger as CSV (oldest first), streamed: `id, created_at, type, amount,
    balance_after, description, generation_id, batch_id, purchase_intent_id,
    polar_order_id`; optionally only the UTC days `from`..`to`."""
    return _csv(account.id, service.export_csv(engine, account.id, _export_range(from_, to)))


@router.get(
    "/v1/admin/accounts/{account_id}/ledger/export",
    tags=["admin"],
    response_class=StreamingResponse,
    responses={**CSV_RESPONSE, **problem_responses(Unauthorized, NotFound)},
)
async def export_account_ledger(
    engine: Engine,
    account_id: uuid.UUID,
    session: Session,
    _: AdminAccess,
    from_: FromParam = None,
    to: DateParam = None,
) -> StreamingResponse:
    """Any account's ledger as CSV, as the account gets it at `/v1/ledger/export`."""
    days = _export_range(from_, to)
    await accounts.get_account(session, account_id)
    return _csv(account_id, service.export_csv(engine, account_id, days))
