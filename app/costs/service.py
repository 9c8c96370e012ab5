"""The model cost report: recorded token usage priced with the price table."""

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.costs import repository
from app.costs.schemas import CostReport, CostRow, CostTotals
from app.generation import pricing

DEFAULT_DAYS = 30


def _per_credit(cost: int | None, credits: int) -> int | None:
    if cost is None or credits <= 0:
        return None
    return (2 * cost + credits) // (2 * credits)  # rounded half up, integers only


async def cost_report(
    session: AsyncSession, settings: Settings, first: date, last: date
) -> CostReport:
    """Per kind, model and priority between `first` and `last` (UTC days, inclusive)."""
    start = datetime.combine(first, time.min, tzinfo=UTC)
    if last < date.max:
        end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    else:
        end = datetime.max.replace(tzinfo=UTC)
    prices = pricing.price_table(settings)
    rows = []
    total_cost = total_credits = 0
    groups = await repository.usage_groups(session, start, end) if start < end else []
    for group in groups:
        cost = pricing.cost_usd_micros(
            prices, group.model, group.priority, group.input_tokens, group.output_tokens
        )
        if cost is not None:
            total_cost += cost
            total_credits += group.credits_charged
        rows.append(
            CostRow(
                kind=group.kind,  # type: ignore[arg-type]
                model=group.model,
                priority=group.priority,  # type: ignore[arg-type]
                generations=group.generations,
                input_tokens=group.input_tokens,
                output_tokens=group.output_tokens,
                cost_usd_micros=cost,
                cost_per_credit_usd_micros=_per_credit(cost, group.credits_charged),
            )
        )
    totals = CostTotals(
        generations=sum(row.generations for row in rows),
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        cost_usd_micros=total_cost,
        cost_per_credit_usd_micros=_per_credit(total_cost, total_credits),
    )
    return CostReport(from_=first, to=last, rows=rows, totals=totals)
