"""The errors a generation answers with once its credit was reserved: each says nothing
was charged."""

import uuid
from typing import Any

from app.errors import AppError
from app.generation.providers.base import FailureKind, ProviderError


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


def failure_error(failure: ProviderError, generation_id: uuid.UUID) -> AppError:
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
