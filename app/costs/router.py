import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from app.accounts.dependencies import AdminAccess
from app.costs import service
from app.costs.schemas import CostReport
from app.db import Session
from app.deps import AppSettings
from app.errors import Unauthorized, problem_responses

router = APIRouter(tags=["admin"])

_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_day(value: Any) -> Any:
    """Only `YYYY-MM-DD`: not the numbers (Unix times) pydantic would read as dates too."""
    if isinstance(value, str) and not _ISO_DAY.match(value):
        raise ValueError("must be a date, YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]


@router.get(
    "/v1/admin/costs",
    response_model=CostReport,
    response_model_by_alias=True,
    responses=problem_responses(Unauthorized),
)
async def get_costs(
    _: AdminAccess,
    session: Session,
    settings: AppSettings,
    from_: Annotated[
        Day | None,
        Query(alias="from", description="First day, `YYYY-MM-DD` (UTC); default 29 days ago."),
    ] = None,
    to: Annotated[
        Day | None, Query(description="Last day, `YYYY-MM-DD` (UTC), inclusive; default today.")
    ] = None,
) -> CostReport:
    """Model cost from the recorded token usage, per kind, model and priority: generations,
    tokens, cost and cost per credit charged (integer micro-dollars, economy at half price).
    A `from` after `to` covers no day: an empty report."""
    last = to or datetime.now(UTC).date()
    first = from_ or last - timedelta(days=service.DEFAULT_DAYS - 1)
    return await service.cost_report(session, settings, first, last)
