"""The provider call of a generation (single or batch item), with its metrics."""

import asyncio
import logging
import time
from typing import Any

from app import metrics
from app.config import Settings
from app.generation import pricing
from app.generation.models import Generation
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    Provider,
    ProviderError,
    ProviderResult,
)

logger = logging.getLogger(__name__)


async def call_provider(
    provider: Provider, settings: Settings, kind: GenerationKind, payload: dict[str, Any]
) -> ProviderResult | ProviderError:
    """The provider's answer, or why there is none. Holds no database connection.
    Counted in the metrics: latency per provider and kind, outcome per kind, error class."""
    started = time.perf_counter()
    answer = await _call_provider(provider, settings, kind, payload)
    count_usage(settings, kind, answer, "standard")
    provider_name = provider.model
    metrics.PROVIDER_SECONDS.labels(provider_name, kind.value).observe(
        time.perf_counter() - started
    )
    if isinstance(answer, ProviderResult):
        metrics.GENERATIONS.labels(kind.value, "succeeded").inc()
    else:
        metrics.GENERATIONS.labels(kind.value, answer.kind.value).inc()
        metrics.PROVIDER_ERRORS.labels(provider_name, answer.reason).inc()
    return answer


def count_usage(
    settings: Settings, kind: GenerationKind, usage: ProviderResult | ProviderError, priority: str
) -> None:
    """The tokens and model cost of a provider answer, in the metrics."""
    cost = pricing.exact_cost_usd_micros(
        pricing.price_table(settings),
        usage.model,
        priority,
        usage.input_tokens,
        usage.output_tokens,
    )
    metrics.count_provider_usage(
        kind.value, usage.model, priority, usage.input_tokens, usage.output_tokens, cost
    )


async def _call_provider(
    provider: Provider, settings: Settings, kind: GenerationKind, payload: dict[str, Any]
) -> ProviderResult | ProviderError:
    try:
        async with asyncio.timeout(settings.generation_timeout_seconds):
            return await provider.generate(kind, payload)
    except ProviderError as exc:
        return exc
    except TimeoutError:
        return ProviderError(
            FailureKind.FAILED, "timeout", "The generation took too long.", model=provider.model
        )
    except Exception:
        logger.exception("generation provider crashed")
        return ProviderError(
            FailureKind.FAILED,
            "internal_error",
            "The generation failed on our side.",
            model=provider.model,
        )


def record_usage(
    generation: Generation, model: str | None, usage: ProviderResult | ProviderError
) -> None:
    """The answer's model, tokens and latency on the generation's row."""
    generation.model = model
    generation.input_tokens = usage.input_tokens
    generation.output_tokens = usage.output_tokens
    if isinstance(usage, ProviderResult):
        generation.latency_ms = usage.latency_ms
    elif generation.created_at is not None and generation.completed_at is not None:
        elapsed = generation.completed_at - generation.created_at
        generation.latency_ms = round(elapsed.total_seconds() * 1000)
