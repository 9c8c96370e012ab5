"""Builds the FastAPI application: routers, error handlers and the lifespan."""

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts.plugin_router import router as plugin_router
from app.accounts.router import router as accounts_router
from app.accounts.service import AUTHENTICATE_WARM_UP
from app.config import Settings, get_settings
from app.costs.router import router as costs_router
from app.credits.alerts_router import router as alerts_router
from app.credits.events import balance_events
from app.credits.fast_lane import BalanceFastLane, is_badge_request
from app.credits.repository import BALANCE_WARM_UP
from app.credits.router import router as credits_router
from app.credits.sweeper import sweep_forever
from app.db import (
    StatementRunner,
    create_engine,
    create_sessionmaker,
    create_statement_runner,
    utcnow,
)
from app.docs import install_docs
from app.errors import PROBLEM_JSON, Problem, ValidationProblem, install_error_handlers
from app.generation import queue
from app.generation.economy import EconomyBatches
from app.generation.router import router as generation_router
from app.generation.worker import instance_name, start_generation
from app.health import router as health_router
from app.housekeeping import prune_forever
from app.idempotency import REPLAYED_HEADER
from app.limits import BodySizeLimitMiddleware, TokenBucketLimiter
from app.observability import RequestContextMiddleware, configure_logging
from app.outbound.dispatcher import run_outbound
from app.outbound.router import router as outbound_router
from app.payments.polar import polar_client
from app.payments.router import router as payments_router
from app.support.router import router as support_router
from app.usage.router import router as usage_router

logger = logging.getLogger("app")

API_DESCRIPTION = """\
RankFrame's AI credits: one account-level balance shared by all of an account's sites,
AI generations that cost one credit per completed output, and credit packages bought
through Polar. Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


def operation_id(route: APIRoute) -> str:
    """Stable operation ids: the endpoint function's name (unique across the app)."""
    return route.name


WARM_UP_SECONDS = 10.0


def warm_up_statements() -> list[tuple[str, tuple[Any, ...]]]:
    """The driver statements every request or batch item runs, with arguments that match
    no row: authentication, the badge, the workers' start and turn."""
    return [AUTHENTICATE_WARM_UP, BALANCE_WARM_UP, *queue.warm_up_statements(utcnow())]


async def warm_up(statements: StatementRunner) -> None:
    """At start-up, beside it: the driver's kept connections opened and the hot statements
    prepared on them, so the first requests and the first batch after a deploy do not pay
    for them (docs/benchmarks.md). Best effort: with the database down or slow, connections
    open on first use, as they would have anyway."""
    try:
        async with asyncio.timeout(WARM_UP_SECONDS):
            await statements.warm_up(warm_up_statements())
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning(
            "warming up the database connections failed; they open on first use (%s: %s)",
            type(exc).__name__,
            exc,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        # Single-statement reads (authentication, the badge) run without a transaction: no
        # BEGIN/COMMIT round trips and, on SQLite, no write lock.
        # Behind a transaction-mode pooler a statement outside a transaction may be parsed
        # on one server and run on another: reads keep their transaction there.
        app.state.read_engine = (
            engine
            if settings.db_transaction_pooling
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        app.state.read_sessionmaker = create_sessionmaker(app.state.read_engine)
        app.state.statements = await create_statement_runner(settings)
        app.state.warm_up = None
        if app.state.statements is not None:
            app.state.warm_up = asyncio.create_task(
                warm_up(app.state.statements), name="database-warm-up"
            )
        sweeper = asyncio.create_task(
            sweep_forever(app.state.sessionmaker, settings.hold_sweep_interval_seconds)
        )
        housekeeping = asyncio.create_task(prune_forever(settings, app.state.sessionmaker))
        generation = start_generation(settings, app.state.sessionmaker, app.state.statements)
        app.state.generation = generation.runtime
        app.state.economy = EconomyBatches(generation.runtime, instance_name())
        app.state.economy.start()
        try:
            async with (
                balance_events(
                    settings, app.state.read_sessionmaker, generation.runtime.channels()
                ) as app.state.balance_broadcaster,
                polar_client(settings) as app.state.polar,
                run_outbound(settings, app.state.sessionmaker),
            ):
                yield
        finally:
            await app.state.economy.stop()
            await generation.stop()
            sweeper.cancel()
            housekeeping.cancel()
            tasks = [sweeper, housekeeping]
            if app.state.warm_up is not None:
                app.state.warm_up.cancel()
                tasks.append(app.state.warm_up)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if app.state.statements is not None:
                await app.state.statements.close()
            await engine.dispose()

    app = CreditsAPI(
        title="RankFrame credits service",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,  # install_docs: the same pages, with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.rate_limiters = {
        # PostgreSQL: the account's bucket is in its balance row, taken by the reserve
        # itself, so it holds across processes and instances (`app.credits.repository`).
        "generations": TokenBucketLimiter(
            settings.rate_limit_generations_per_minute, settings.rate_limit_generations_burst
        )
        if settings.is_sqlite
        else None,
        "purchases": TokenBucketLimiter(
            settings.rate_limit_purchases_per_minute, settings.rate_limit_purchases_burst
        ),
        "plugin_sessions": TokenBucketLimiter(
            settings.plugin_sessions_per_minute, settings.plugin_sessions_burst
        ),
    }
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit=settings.max_body_bytes,
        large_limit=settings.max_batch_body_bytes,
        large_paths=("/v1/generation-batches",),
    )
    cors = cors_options(settings)
    if cors is not None:
        app.add_middleware(CORSMiddleware, **cors)
    app.badge_lane = BalanceFastLane(
        app.framework,
        functools.partial(CORSMiddleware, **cors) if cors is not None else None,
    )
    install_error_handlers(app)
    install_docs(app)
    app.include_router(health_router)
    app.include_router(accounts_router)
    app.include_router(credits_router)
    app.include_router(payments_router)
    app.include_router(generation_router)
    app.include_router(alerts_router)
    app.include_router(outbound_router)
    app.include_router(support_router)
    app.include_router(plugin_router)
    app.include_router(usage_router)
    app.include_router(costs_router)
    _register_problem_schemas(app)
    return app


def plugin_origin_regex(settings: Settings) -> str | None:
    """The Framer plugin's origins (`https://<id>.plugins.framercdn.com` and
    `https://<id>-<version>.plugins.framercdn.com`), plus localhost when allowed."""
    patterns = []
    if settings.framer_plugin_id:
        plugin = re.escape(settings.framer_plugin_id)
        patterns.append(rf"https://{plugin}(-[A-Za-z0-9]+)?\.plugins\.framercdn\.com")
    if settings.cors_allow_localhost:
        patterns.append(r"http://(localhost|127\.0\.0\.1)(:[0-9]{1,5})?")
    return "^(" + "|".join(patterns) + ")$" if patterns else None


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """`CORSMiddleware`'s options, or None: no CORS headers for anyone."""
    origin_regex = plugin_origin_regex(settings)
    if origin_regex is None:
        return None
    return {
        "allow_origin_regex": origin_regex,
        "allow_credentials": False,  # bearer tokens, no cookies: never `*` with credentials
        "allow_methods": ["GET", "POST", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        "expose_headers": ["Retry-After", "X-Request-ID", REPLAYED_HEADER],
        "max_age": 600,
    }


class CreditsAPI(FastAPI):
    """FastAPI behind the request context (request id, access log, metrics), which wraps
    every HTTP request once, the framework's own error responses included. The badge polled
    by every open plugin goes to its fast lane (`app.credits.fast_lane`) before the
    framework's layers; the lane hands back to `framework` whatever it does not answer."""

    badge_lane: ASGIApp | None = None

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    @functools.cached_property
    def _http(self) -> ASGIApp:
        return RequestContextMiddleware(self._dispatch)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.badge_lane is not None and is_badge_request(scope):
            scope["app"] = self
            await self.badge_lane(scope, receive, send)
        else:
            await self.framework(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.framework(scope, receive, send)


def _register_problem_schemas(app: FastAPI) -> None:
    """Put `Problem` in the document's components so every error response can refer to it."""
    original = app.openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema())
        components["ValidationProblem"] = ValidationProblem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        # FastAPI documents 422 with its own shape; ours is problem+json with `errors`.
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if "422" in operation.get("responses", {}):
                    operation["responses"]["422"] = {
                        "description": "Validation error: `validation_error`",
                        "content": {
                            PROBLEM_JSON: {
                                "schema": {"$ref": "#/components/schemas/ValidationProblem"}
                            }
                        },
                    }
                _document_idempotency(operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_idempotency(operation: dict[str, Any]) -> None:
    """An operation that takes `Idempotency-Key`: say whether it is required, and that any
    of its answers may be a stored one, marked `Idempotency-Replayed: true`."""
    key = next(
        (p for p in operation.get("parameters", []) if p.get("name") == "Idempotency-Key"),
        None,
    )
    if key is None:
        return
    rule = (
        "**`Idempotency-Key` is required**"
        if key.get("required")
        else "`Idempotency-Key` is optional"
    )
    operation["description"] = (
        operation.get("description", "").rstrip()
        + f"\n\n{rule}: a repeat with the same key and body returns the first answer, "
        f"marked `{REPLAYED_HEADER}: true`; the same key with another body is "
        "`409 idempotency_key_reused`."
    ).lstrip()
    for status, response in operation.get("responses", {}).items():
        if status in ("401", "404", "422", "429", "413"):
            continue  # decided before the key is looked at: never a replay
        response.setdefault("headers", {})[REPLAYED_HEADER] = {
            "description": "`true` when this is the stored answer of an earlier request "
            "with the same `Idempotency-Key`.",
            "schema": {"type": "string", "enum": ["true"]},
        }


app = create_app()
