"""Structured JSON logs with a request id (and account id where known) on every line,
and the access-log / metrics middleware."""

import asyncio
import contextvars
import json
import logging
import re
import secrets
import sys
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import problem_response

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
account_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "account_id", default=None
)

_REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_SECRET_PATTERN = re.compile(r"(rfk_[0-9a-f]+_)[A-Za-z0-9_-]+|(Bearer\s+)\S+|(whsec_)\S+")


def redact(text: str) -> str:
    """Never let an API key, bearer token or webhook secret reach the logs."""
    return _SECRET_PATTERN.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": request_id_var.get(),
            "account_id": account_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The middleware below writes the access log, with the request id.
    logging.getLogger("uvicorn.access").disabled = True


access_logger = logging.getLogger("app.access")
logger = logging.getLogger("app.errors")


async def _shutting_down(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(
        503,
        "shutting_down",
        "The server is restarting",
        "This server stopped before it could finish the request; retry it (a request with an "
        "Idempotency-Key is safe to retry with the same key).",
        headers={"Retry-After": "1", "Connection": "close"},
    )
    await response(scope, receive, send)


async def _internal_error(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(
        500, "internal_error", "Internal server error", "An unexpected error occurred."
    )
    await response(scope, receive, send)


class RequestContextMiddleware:
    """Pure ASGI (no per-request task): request id in and out, an access log line, and the
    request metrics by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER:
                incoming = value
                break
        text = incoming.decode("latin-1")
        request_id = text if _SAFE_REQUEST_ID.match(text) else secrets.token_hex(16)
        request_token = request_id_var.set(request_id)
        account_token = account_id_var.set(None)
        started = time.perf_counter()
        status = 500

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                status_sent = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (_REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Only the server cancels a request: uvicorn, for those still open when
            # `--timeout-graceful-shutdown` runs out. It would answer with a plain-text 500.
            if status_sent:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await _shutting_down(scope, receive, send_with_id)
        except Exception as exc:
            # What no handler turned into an answer (uvicorn's would be plain text).
            if status_sent:
                raise
            logger.error("unhandled error", exc_info=exc)
            await _internal_error(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(scope["method"], template, status, elapsed)
            state = scope.get("state") or {}
            account_id = state.get("account_id")
            access_logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "account_id": str(account_id) if account_id else None,
                },
            )
            request_id_var.reset(request_token)
            account_id_var.reset(account_token)
