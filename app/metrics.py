"""Prometheus metrics. With several worker processes set `PROMETHEUS_MULTIPROC_DIR` to an
empty directory so `/metrics` aggregates every worker (prometheus_client multiprocess mode)."""

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

REQUESTS = Counter(
    "rankframe_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "rankframe_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CREDITS = Counter(
    "rankframe_credits_total",
    "Credits moved, by movement (reserved, consumed, released, granted, taken) and entry type",
    ["movement", "type"],
)
GENERATIONS = Counter(
    "rankframe_generations_total", "Generations by kind and outcome", ["kind", "outcome"]
)
PROVIDER_SECONDS = Histogram(
    "rankframe_provider_call_duration_seconds",
    "Model provider call latency",
    ["provider", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
PROVIDER_ERRORS = Counter(
    "rankframe_provider_errors_total", "Model provider errors by class", ["provider", "error"]
)
PROVIDER_TOKENS = Counter(
    "rankframe_provider_tokens_total",
    "Model tokens billed, by kind, model and direction (input, output)",
    ["kind", "model", "direction"],
)
PROVIDER_COST = Counter(
    "rankframe_provider_cost_usd_micros_total",
    "Model cost in micro-dollars (from the price table), by kind, model and priority",
    ["kind", "model", "priority"],
)
WEBHOOKS = Counter(
    "rankframe_webhook_deliveries_total",
    "Polar webhook deliveries by type and outcome",
    ["type", "outcome"],
)


_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
"""The labelled children per (method, route, status): `labels()` takes a lock and builds
its key on every call, a measurable share of the badge's cost (docs/benchmarks.md)."""


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    series = _request_series.get((method, route, status))
    if series is None:
        series = (
            REQUESTS.labels(method, route, str(status)),
            REQUEST_SECONDS.labels(method, route),
        )
        _request_series[(method, route, status)] = series
    series[0].inc()
    series[1].observe(seconds)


def count_credits(movement: str, type_: str, amount: int) -> None:
    if amount:
        CREDITS.labels(movement, type_).inc(amount)


def count_provider_usage(
    kind: str, model: str | None, priority: str, input_tokens: int, output_tokens: int, cost: Any
) -> None:
    """Tokens of one model call (or batch result) and their cost (`Decimal` micro-dollars,
    None for a model without a price)."""
    if model is None or (not input_tokens and not output_tokens):
        return
    PROVIDER_TOKENS.labels(kind, model, "input").inc(input_tokens)
    PROVIDER_TOKENS.labels(kind, model, "output").inc(output_tokens)
    if cost is not None:
        PROVIDER_COST.labels(kind, model, priority).inc(float(cost))


def exposition(extra: str = "") -> tuple[bytes, str]:
    """The text exposition of this process (or of all workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return body + extra.encode(), CONTENT_TYPE_LATEST


_PENDING_KEY = "rankframe.pending_credit_metrics"


def count_credits_on_commit(info: dict, movement: str, type_: str, amount: int) -> None:  # type: ignore[type-arg]
    """Count credits moved by a transaction only once it commits (`info` is the session's)."""
    info.setdefault(_PENDING_KEY, []).append((movement, type_, amount))


def _install_session_hooks() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    @event.listens_for(Session, "after_commit")
    def _emit(session: Session) -> None:
        for movement, type_, amount in session.info.pop(_PENDING_KEY, ()):
            count_credits(movement, type_, amount)

    @event.listens_for(Session, "after_rollback")
    def _drop(session: Session) -> None:
        session.info.pop(_PENDING_KEY, None)


_install_session_hooks()


EVENT_DELIVERIES = Counter(
    "rankframe_event_deliveries_total",
    "Outbound event delivery attempts by type and outcome (sent, retried, failed)",
    ["type", "outcome"],
)
