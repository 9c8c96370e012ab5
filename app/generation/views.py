"""Generations, batches and batch items as the API shows them (read models)."""

from typing import Any

from app.generation import lifecycle
from app.generation.models import Generation, GenerationBatch, GenerationBatchItem
from app.generation.providers.base import GenerationKind
from app.generation.schemas import (
    BatchItemRead,
    BatchRead,
    GenerationError,
    GenerationRead,
    GenerationUsage,
    SchemaOutput,
    TextOutput,
)

KIND_LABELS = {
    "meta_title": "meta title",
    "meta_description": "meta description",
    "alt_text": "alt text",
    "schema": "schema",
}


def charge_description(kind: GenerationKind | str) -> str:
    """The ledger entry's description of a generation's charge."""
    return f"AI generation: {KIND_LABELS[GenerationKind(kind).value]}"


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
