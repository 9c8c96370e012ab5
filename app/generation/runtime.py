"""What generations need for the app's lifetime (`GenerationRuntime`): the provider and its
gate, the session factory and driver, the tasks running detached from their requests, the
generations waiting for the database to answer again, and the shutdown that drains them."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import StatementRunner
from app.errors import is_database_unavailable
from app.generation import queue
from app.generation.events import BatchFeeds
from app.generation.limiter import AdaptiveLimiter
from app.generation.providers.base import Provider
from app.generation.recovery import fail_unrecorded_generations

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHUTDOWN_GRACE_SECONDS = 20.0
ANSWER_AFTER_CANCEL_SECONDS = 5.0
"""How long a cancelled request still waits for its generation's recorded outcome."""
RESOLVE_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


@dataclass
class Attempt:
    """A detached generation's link to the request waiting for its answer."""

    in_provider_call: bool = False
    abandoned: bool = False
    """The request was cancelled (a server shutting down): nobody will read the answer."""


@dataclass
class GenerationRuntime:
    """What generations need for the app's lifetime: one provider, the session factory, the
    tasks running detached from their requests, and a way to wake the batch workers."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    provider: Provider
    statements: StatementRunner | None = None
    """PostgreSQL: the single generation's reserve and charge run as one statement each."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    batch_created: asyncio.Event = field(default_factory=asyncio.Event)
    unresolved: set[uuid.UUID] = field(default_factory=set)
    """Generations whose recording the database interrupted: failed (uncharged, their key
    freed) as soon as it answers again, unless the interrupted write had committed."""
    _resolver: asyncio.Task[None] | None = None
    limiter: AdaptiveLimiter = field(default_factory=lambda: AdaptiveLimiter(8))
    """The process's gate in front of the provider (batch workers and single generations)."""
    feeds: BatchFeeds = field(init=False)
    """The process's batch event feeds (one poll per followed batch)."""

    def __post_init__(self) -> None:
        self.feeds = BatchFeeds(self.sessionmaker, self.settings.batch_events_interval_seconds)

    async def detached(self, work: Coroutine[Any, Any, T], attempt: Attempt | None = None) -> T:
        """Run `work` as a task a client that disconnects cannot stop, kept referenced
        until it ends.

        The request itself is cancelled only by the server: uvicorn cancels the requests
        still open when `--timeout-graceful-shutdown` runs out, and would answer each with
        its own plain-text 500. Such a request still answers, and truly: a generation still
        waiting for the model is stopped and given back (nothing charged, `503`), one
        already being recorded is waited for and its real answer sent."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if attempt is None or task.done():
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            attempt.abandoned = True
            if attempt.in_provider_call:
                task.cancel()
            try:
                async with asyncio.timeout(ANSWER_AFTER_CANCEL_SECONDS):
                    return await asyncio.shield(task)
            except TimeoutError:
                # Still not recorded (the database?): the request layer answers 503, and
                # the generation resolves as it can (uncharged unless its charge commits).
                raise asyncio.CancelledError from None

    def channels(self) -> dict[str, Callable[[str], None]]:
        """What this process listens for (PostgreSQL `NOTIFY`, any instance): a batch created
        wakes the claimer, a batch's items finished or canceled wake its events feed."""

        def changed(payload: str) -> None:
            with contextlib.suppress(ValueError):
                self.feeds.wake([uuid.UUID(payload)])

        return {
            queue.BATCH_CREATED_CHANNEL: lambda _payload: self.batch_created.set(),
            queue.BATCH_CHANGED_CHANNEL: changed,
        }

    def resolve_later(self, generation_id: uuid.UUID) -> None:
        """Fail `generation_id` once the database answers again, if it is still running."""
        self.unresolved.add(generation_id)
        if self._resolver is None or self._resolver.done():
            self._resolver = asyncio.create_task(self._resolve_forever(), name="resolver")

    async def _resolve_forever(self) -> None:
        attempt = 0
        while self.unresolved:
            pending = set(self.unresolved)
            try:
                await fail_unrecorded_generations(self.sessionmaker, pending)
            except Exception as exc:
                if not is_database_unavailable(exc):
                    logger.exception("resolving unrecorded generations failed; retrying")
                await asyncio.sleep(RESOLVE_RETRY_SECONDS[min(attempt, 3)])
                attempt += 1
                continue
            self.unresolved -= pending
            attempt = 0

    async def drain(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """At shutdown: let running generations finish, then interrupt the rest (their
        holds are released on the way out, or by the sweeper)."""
        if self._resolver is not None:
            # Left to the sweeper (at hold expiry) if the database is still away.
            self._resolver.cancel()
            await asyncio.gather(self._resolver, return_exceptions=True)
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await self.feeds.close()
        await self.provider.aclose()
