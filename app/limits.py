"""Abuse limits: request body size (413) and per-account rate limits (429 `rate_limited`)."""

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.dependencies import CurrentAccount
from app.deps import RateLimiters
from app.errors import AppError, RateLimited, problem_response

__all__ = ["PayloadTooLarge", "RateLimited", "TokenBucketLimiter", "rate_limit"]


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit before the app reads them, whether or not the client
    sent a Content-Length. Paths starting with one of `large_paths` get `large_limit`."""

    def __init__(
        self, app: ASGIApp, *, limit: int, large_limit: int, large_paths: tuple[str, ...]
    ) -> None:
        self.app = app
        self.limit = limit
        self.large_limit = large_limit
        self.large_paths = large_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.large_limit if path.startswith(self.large_paths) else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False
            if too_large:
                await self._refuse(limit, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read the body up to the limit before the app sees it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._refuse(limit, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            PayloadTooLarge.code,
            PayloadTooLarge.title,
            f"The request body is larger than {limit} bytes.",
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Hand out `messages` first, then the real `receive` (disconnects still arrive)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Per-key token buckets, per process: `rate` requests a minute with bursts of `burst`.
    On PostgreSQL the generations bucket is the account's instead, in its balance row
    (`app.credits.repository.RATE_TOKENS`), shared by every process and instance."""

    def __init__(self, per_minute: int, burst: int, *, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """0 if allowed now, else the seconds to wait."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate if self.rate > 0 else 60.0


def rate_limit(name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """A route dependency limiting the calling account on the limiter `name`
    (one of the app's `RateLimiters`)."""

    async def dependency(limiters: RateLimiters, account: CurrentAccount) -> None:
        limiter = limiters[name]
        if limiter is None:
            return  # kept in the database instead (PostgreSQL generations, see `main`)
        wait = limiter.acquire(str(account.id))
        if wait > 0:
            raise RateLimited.wait(name, wait)

    dependency.__name__ = f"rate_limit_{name}"
    return dependency
