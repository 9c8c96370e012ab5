"""`GET /v1/balance` on PostgreSQL without the framework: the endpoint every open plugin
polls, served by one statement on the driver pool.

FastAPI's routing, dependency solving and response validation cost several times what the
statement does (docs/benchmarks.md), so this ASGI layer answers the common case itself: a
well-formed `Bearer` key that is live. It sits inside the request-context and CORS
middlewares, so request ids, access logs, metrics and CORS headers are the same as for any
route. Everything else (no or malformed credentials, an unknown or revoked key, SQLite, a
database error) goes on to the FastAPI route `get_balance`, which stays the documented
contract and answers those cases. The body is built by the same `balance_read` with the
same model, so both paths answer the same JSON.
"""

import logging
from types import SimpleNamespace
from typing import Any

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts.service import key_lookup_id, key_matches
from app.credits import repository
from app.credits.views import balance_read
from app.observability import account_id_var

logger = logging.getLogger(__name__)

BALANCE_PATH = "/v1/balance"
_ROUTE = SimpleNamespace(path=BALANCE_PATH)
"""What the request metrics and access log read the route template from."""
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class BalanceFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != BALANCE_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        pool: asyncpg.Pool | None = getattr(scope["app"].state, "driver_pool", None)
        raw_key = _bearer_credentials(scope["headers"])
        lookup_id = key_lookup_id(raw_key) if raw_key else None
        if pool is None or raw_key is None or lookup_id is None:
            await self.app(scope, receive, send)
            return
        try:
            row = await repository.balance_by_api_key_on_pool(pool, lookup_id)
        except _DATABASE_ERRORS:
            # The framework path retries on its own pool and answers 503 if the database
            # is really gone.
            logger.warning("balance fast lane: database error, answering via the router")
            await self.app(scope, receive, send)
            return
        if row is None or not key_matches(raw_key, row["secret_hash"], row["revoked_at"]):
            await self.app(scope, receive, send)  # the route answers 401
            return
        account_id = row["account_id"]
        scope["route"] = _ROUTE
        scope.setdefault("state", {})["account_id"] = account_id
        account_id_var.set(str(account_id))
        body = balance_read(row["available"], row["reserved"], _Subscription(row)).model_dump_json()
        payload = body.encode()
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


class _Subscription:
    """A record's subscription columns as attributes (`SubscriptionState`)."""

    __slots__ = ("subscription_status", "trial_ends_at", "current_period_end")

    def __init__(self, row: Any) -> None:
        self.subscription_status = row["subscription_status"]
        self.trial_ends_at = row["trial_ends_at"]
        self.current_period_end = row["current_period_end"]
