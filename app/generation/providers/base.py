"""The one small interface every provider implements, and what it returns or raises."""

import contextvars
import enum
from dataclasses import dataclass
from typing import Any, Protocol

RATE_LIMITS_REQUEUED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rate_limits_requeued", default=False
)
"""Set by batch workers: a rate-limited call is not retried by the provider (the item goes
back to the queue), so the limiter hears of every 429 at once."""


class GenerationKind(enum.StrEnum):
    META_TITLE = "meta_title"
    META_DESCRIPTION = "meta_description"
    ALT_TEXT = "alt_text"
    SCHEMA = "schema"


@dataclass(frozen=True)
class ProviderResult:
    output: dict[str, Any]
    """`{"text": ...}` or `{"schema": {...}}`, already checked against the kind's limits."""
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int


class FailureKind(enum.StrEnum):
    UNAVAILABLE = "unavailable"
    """Rate limited or overloaded after the SDK's retries: try again later."""
    FAILED = "failed"
    """Upstream error, timeout, invalid output: this attempt produced nothing usable."""


class ProviderError(Exception):
    """No usable output. Never charged."""

    def __init__(
        self,
        kind: FailureKind,
        reason: str,
        detail: str,
        *,
        retry_after_seconds: int | None = None,
        retry_after_exact: float | None = None,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.reason = reason
        """A short machine-readable cause: `rate_limited`, `overloaded`, `timeout`,
        `upstream_error`, `invalid_output`, ..."""
        self.detail = detail
        self.retry_after_seconds = retry_after_seconds
        """Whole seconds, for an HTTP `Retry-After`."""
        self.retry_after_exact = retry_after_exact
        """The provider's own wait when it gave one more precisely (`retry-after-ms`)."""
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class Provider(Protocol):
    model: str
    """The model name recorded on generations."""

    async def generate(self, kind: GenerationKind, payload: dict[str, Any]) -> ProviderResult:
        """One output for `payload` (the request's validated `input`), or `ProviderError`."""
        ...

    async def aclose(self) -> None: ...
