"""SQL for the cost report: recorded token usage, grouped. Callers own the transaction."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.generation.models import Generation, GenerationBatch, GenerationBatchItem


@dataclass(frozen=True)
class UsageGroup:
    kind: str
    model: str
    priority: str
    generations: int
    input_tokens: int
    output_tokens: int
    credits_charged: int


async def usage_groups(session: AsyncSession, start: datetime, end: datetime) -> list[UsageGroup]:
    """Per kind, model and priority: generations that called a model (finished in
    [start, end)), single ones and batch items alike, their tokens and credits charged."""
    singles = (
        select(
            Generation.kind,
            Generation.model,
            Generation.priority,
            func.count(),
            func.coalesce(func.sum(Generation.input_tokens), 0),
            func.coalesce(func.sum(Generation.output_tokens), 0),
            func.coalesce(func.sum(Generation.credits_charged), 0),
        )
        .where(
            Generation.model.is_not(None),
            Generation.completed_at >= start,
            Generation.completed_at < end,
        )
        .group_by(Generation.kind, Generation.model, Generation.priority)
    )
    items = (
        select(
            GenerationBatch.kind,
            GenerationBatchItem.model,
            GenerationBatchItem.priority,
            func.count(),
            func.coalesce(func.sum(GenerationBatchItem.input_tokens), 0),
            func.coalesce(func.sum(GenerationBatchItem.output_tokens), 0),
            func.coalesce(func.sum(GenerationBatchItem.credits_charged), 0),
        )
        .join(GenerationBatch, GenerationBatch.id == GenerationBatchItem.batch_id)
        .where(
            GenerationBatchItem.model.is_not(None),
            GenerationBatchItem.finished_at >= start,
            GenerationBatchItem.finished_at < end,
        )
        .group_by(GenerationBatch.kind, GenerationBatchItem.model, GenerationBatchItem.priority)
    )
    merged: dict[tuple[str, str, str], list[int]] = {}
    for statement in (singles, items):
        for kind, model, priority, count, tokens_in, tokens_out, charged in (
            await session.execute(statement)
        ).all():
            totals = merged.setdefault((str(kind), str(model), str(priority)), [0, 0, 0, 0])
            for index, value in enumerate((count, tokens_in, tokens_out, charged)):
                totals[index] += int(value or 0)
    return [
        UsageGroup(kind, model, priority, *values)
        for (kind, model, priority), values in sorted(merged.items())
    ]
