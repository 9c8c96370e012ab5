"""One error hierarchy and the one handler that renders RFC 9457 problem+json."""

import logging
import math
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

logger = logging.getLogger("app.errors")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://docs.rankframe.com/problems/"


class AppError(Exception):
    """An error a client can act on; subclasses live beside the service that raises them."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    title = "Missing or invalid credentials"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class IdempotencyKeyReused(AppError):
    status = 409
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with a different request"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    @classmethod
    def wait(cls, what: str, seconds: float) -> "RateLimited":
        retry_after = max(1, math.ceil(seconds))
        return cls(
            f"Too many {what} requests; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


class ServiceNotConfigured(AppError):
    status = 503
    code = "service_not_configured"
    title = "This feature is not configured on this server"


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://docs.rankframe.com/problems/insufficient_credits",
                    "title": "Not enough credits",
                    "status": 402,
                    "detail": "This needs 72 credits; 40 are available.",
                    "code": "insufficient_credits",
                    "needed": 72,
                    "available": 40,
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    code: str


class ValidationProblem(Problem):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://docs.rankframe.com/problems/validation_error",
                    "title": "The request is not valid",
                    "status": 422,
                    "detail": "One or more fields are missing or invalid; see `errors`.",
                    "code": "validation_error",
                    "errors": [
                        {
                            "loc": ["body", "amount"],
                            "msg": "must not be zero",
                            "type": "value_error",
                        }
                    ],
                }
            ]
        }
    )

    errors: list[dict[str, Any]]


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, code, title, detail, **extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **jsonable_encoder(extra),
    }


def app_error_body(error: AppError) -> dict[str, Any]:
    """The problem+json body of `error` (to store it, e.g. for an `Idempotency-Key` replay)."""
    return problem_body(error.status, error.code, error.title, error.detail, **error.extra)


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: every listed error, rendered as problem+json."""
    by_status: dict[int, list[type[AppError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, classes in sorted(by_status.items()):
        codes = ", ".join(f"`{c.code}`" for c in classes)
        responses[status] = {
            "description": f"{HTTPStatus(status).phrase}: {codes}",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return responses


_DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    # The driver's own: the server gone, restarting, refusing, full, or the connection's
    # state machine broken by a drop mid-transaction ("cannot switch to state ...").
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # SQLAlchemy's names for the same, and its pool's checkout timeout.
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    # The network below both (ConnectionError, refused, reset) and every timeout.
    OSError,
    TimeoutError,
)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` is the database (or the way to it) failing, not a bug or a refusal:
    looks through SQLAlchemy's wrapper (`orig`) and the exceptions it was raised from."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 16:
            continue
        seen.add(id(current))
        if isinstance(current, _DATABASE_FAILURES):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        pending.extend((getattr(current, "orig", None), current.__cause__, current.__context__))
    return False


class DatabaseUnavailable(AppError):
    status = 503
    code = "database_unavailable"
    title = "The database is not answering"


def database_unavailable_response(exc: BaseException) -> JSONResponse:
    # The database is down, unreachable or busy. Whether a write that was under way took
    # effect is not known here, so the answer does not claim either.
    logger.error("database unavailable", exc_info=exc)
    return problem_response(
        503,
        DatabaseUnavailable.code,
        DatabaseUnavailable.title,
        "The service cannot reach its database right now; try again shortly (a request "
        "with an Idempotency-Key is safe to retry with the same key).",
        headers={"Retry-After": "5"},
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _json_safe_errors(errors: list[Any]) -> list[dict[str, Any]]:
    safe = []
    for error in errors:
        item = {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        safe.append(item)
    return safe


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API offers at this path (Starlette names only the first route's),
    read from the app's own OpenAPI document once."""
    table = getattr(request.app.state, "allowed_methods_by_path", None)
    if table is None:
        table = []
        for path, item in request.app.openapi().get("paths", {}).items():
            methods = {method.upper() for method in item if method in _HTTP_METHODS}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((compile_path(path)[0], methods))
        request.app.state.allowed_methods_by_path = table
    allowed: set[str] = set()
    for regex, methods in table:
        if regex.match(request.url.path):
            allowed |= methods
    return sorted(allowed)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem_response(
            exc.status, exc.code, exc.title, exc.detail, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            "validation_error",
            "The request is not valid",
            "One or more fields are missing or invalid; see `errors`.",
            errors=_json_safe_errors(list(exc.errors())),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (undecodable bytes): a validation error.
            return problem_response(
                422,
                "validation_error",
                "The request is not valid",
                "The request body is not valid UTF-8 JSON.",
                errors=[{"loc": ["body"], "msg": str(exc.detail), "type": "json_invalid"}],
            )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        title = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404:
            # One title for every 404, whether no route or no such resource answered it.
            title, detail = NotFound.title, "Nothing exists at this path."
        return problem_response(exc.status_code, code, title, detail, headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(ConnectionError)
    @app.exception_handler(TimeoutError)
    # The driver pool's own errors (PostgreSQL): the server gone, restarting, or full.
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    @app.exception_handler(asyncpg.exceptions.InsufficientResourcesError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(asyncpg.InternalClientError)
    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        if is_database_unavailable(exc):
            return database_unavailable_response(exc)
        return _internal_error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if is_database_unavailable(exc):
            return database_unavailable_response(exc)
        return _internal_error(exc)


def _internal_error(exc: BaseException) -> JSONResponse:
    logger.error("unexpected error", exc_info=exc)
    return problem_response(
        500, "internal_error", "Internal server error", "An unexpected error occurred."
    )
