"""`GET /v1/balance` on PostgreSQL without the framework: the endpoint every open plugin
polls, served by one statement on the driver pool.

FastAPI's routing, dependency solving, response validation and its own outer layers cost
several times what the statement does (docs/benchmarks.md), so the app (`app.main`) sends
`GET /v1/balance` here before the framework, through the same request-context middleware
(request id, access log, metrics) and, for the answers given here, the same CORS rules.
This layer answers the common case itself: a well-formed `Bearer` key that is live.
Everything else (no or malformed credentials, an unknown or revoked key, SQLite, a
database error, any surprise) goes on to the framework and the route `get_balance`, which
stays the documented contract and answers those cases. The body is built by the same
`badge_for_key` with the same model, so both paths answer the same JSON.
"""

import logging
from collections.abc import Callable
from types import SimpleNamespace

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts.service import key_lookup_id
from app.credits import repository
from app.credits.views import badge_for_key
from app.db import StatementRunner
from app.observability import account_id_var

logger = logging.getLogger(__name__)

BALANCE_PATH = "/v1/balance"
_ROUTE = SimpleNamespace(path=BALANCE_PATH)
"""What the request metrics and access log read the route template from."""
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def is_badge_request(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] == BALANCE_PATH and scope["method"] == "GET"


class BalanceFastLane:
    """`app`: the framework, for every request not answered here. `cors`: wraps an ASGI
    app in the service's CORS rules (None: no CORS headers for anyone)."""

    def __init__(self, app: ASGIApp, cors: Callable[[ASGIApp], ASGIApp] | None) -> None:
        self.app = app
        self.respond = cors(_send_prepared) if cors is not None else _send_prepared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            payload = await self._badge(scope)
        except Exception:
            # Never an error of our own here: the framework answers, with its handlers.
            logger.exception("balance fast lane failed; answering via the router")
            payload = None
        if payload is None:
            await self.app(scope, receive, send)
            return
        scope[_PAYLOAD] = payload
        await self.respond(scope, receive, send)

    async def _badge(self, scope: Scope) -> bytes | None:
        """The badge's JSON, or None to let the framework answer."""
        statements: StatementRunner | None = getattr(scope["app"].state, "statements", None)
        raw_key = _bearer_credentials(scope["headers"])
        lookup_id = key_lookup_id(raw_key) if raw_key else None
        if statements is None or raw_key is None or lookup_id is None:
            return None
        try:
            row = await repository.balance_by_api_key_on_driver(statements, lookup_id)
        except _DATABASE_ERRORS:
            # The framework retries on its own pool and answers 503 if the database is
            # really gone.
            logger.warning("balance fast lane: database error, answering via the router")
            return None
        found = badge_for_key(raw_key, row)
        if found is None:
            return None  # the route answers 401
        account_id, badge = found
        scope["route"] = _ROUTE
        scope.setdefault("state", {})["account_id"] = account_id
        account_id_var.set(str(account_id))
        return badge.model_dump_json().encode()


_PAYLOAD = "rankframe.badge"


async def _send_prepared(scope: Scope, _receive: Receive, send: Send) -> None:
    payload: bytes = scope[_PAYLOAD]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _bearer_credentials(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of `Authorization: Bearer <key>`, as FastAPI's `HTTPBearer` reads it."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return credentials.strip() or None
    return None
