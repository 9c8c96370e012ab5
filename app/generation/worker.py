"""The batch workers: a bounded pool per process that claims items from the database, so
any server instance works any batch, plus a heartbeat that keeps their holds alive.

An item is claimed under a lease (`claimed_until`) with a fresh `claim_token`; the
heartbeat renews the leases of this instance's items and extends the holds of its items and
of every queued item. If the instance dies, its leases run out and any instance reclaims
the items (lease + poll interval < hold TTL, so before their holds expire); if every
instance is gone longer than the hold TTL, the sweeper releases the holds and the items
fail without a charge when they are next claimed. Either way every credit is accounted for.
"""

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.credits import service as credits
from app.credits.service import HoldOutcome
from app.db import utcnow
from app.generation import repository
from app.generation.providers import create_provider
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)
from app.generation.service import (
    KIND_LABELS,
    GenerationRuntime,
    call_provider,
    fail_interrupted_generations,
)

logger = logging.getLogger(__name__)

HOLD_CHUNK = 500


@dataclass(frozen=True)
class _Claimed:
    item_id: int
    token: uuid.UUID
    batch_id: uuid.UUID
    kind: GenerationKind
    payload: dict[str, Any]
    attempts: int


def instance_name() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BatchWorkers:
    def __init__(self, runtime: GenerationRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.instance_id = instance_name()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for number in range(self.settings.generation_concurrency):
            self._tasks.append(
                asyncio.create_task(self._work_forever(), name=f"batch-worker-{number}")
            )
        self._tasks.append(asyncio.create_task(self._heartbeat_forever(), name="batch-heartbeat"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # --- the workers ---

    async def _work_forever(self) -> None:
        wake = self.runtime.batch_created
        while True:
            try:
                claimed = await self.claim_one()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("claiming a batch item failed; retrying")
                claimed = None
            if claimed is None:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.settings.batch_poll_interval_seconds)
                continue
            if claimed is True:
                continue
            try:
                await self._process(claimed)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The lease runs out and the item is retried (or, past its attempts, failed).
                logger.exception("batch item %s failed to record; it will be retried", claimed)

    async def claim_one(self) -> "_Claimed | bool | None":
        """Claim the next item. `None`: nothing to do; `True`: an item was resolved without
        work (canceled batch, expired hold, too many attempts); else the claimed item."""
        settings = self.settings
        async with self.runtime.sessionmaker() as session, session.begin():
            now = utcnow()
            found = await repository.claim_next_item(session, now)
            if found is None:
                return None
            item, batch = found
            if batch.status == "canceled":
                await credits.release(session, item.hold_id, now=now)
                item.status, item.finished_at, item.claimed_until = "canceled", now, None
                resolved = True
            elif item.attempts >= settings.batch_max_attempts:
                await credits.release(session, item.hold_id, now=now)
                self._fail(item, "generation_failed", "interrupted", "Its workers kept stopping.")
                resolved = True
            else:
                alive = await credits.keep_alive(
                    session, [item.hold_id], ttl=timedelta(seconds=settings.batch_hold_ttl_seconds)
                )
                if not alive:
                    # No live worker kept its reservation: the credit went (or goes) back.
                    await credits.release(session, item.hold_id, now=now)
                    self._fail(
                        item,
                        "generation_failed",
                        "reservation_expired",
                        "Its credit reservation expired before it could be generated.",
                    )
                    resolved = True
                else:
                    token = uuid.uuid4()
                    item.status = "running"
                    item.claimed_by = self.instance_id
                    item.claim_token = token
                    item.claimed_until = now + timedelta(seconds=settings.batch_lease_seconds)
                    item.attempts += 1
                    claimed = _Claimed(
                        item.id,
                        token,
                        batch.id,
                        GenerationKind(batch.kind),
                        dict(item.input),
                        item.attempts,
                    )
                    resolved = False
            if resolved:
                item.claim_token = None
            batch_id, batch_status = batch.id, batch.status
        if resolved:
            await self._complete_if_done(batch_id)
            return True
        if batch_status == "queued":
            async with self.runtime.sessionmaker() as session, session.begin():
                await repository.mark_batch_running(session, batch_id)
        return claimed

    @staticmethod
    def _fail(item: Any, code: str, reason: str, detail: str) -> None:
        item.status = "failed"
        item.error_code = code
        item.error_detail = f"{reason}: {detail}"
        item.finished_at = utcnow()
        item.claimed_until = None

    async def _process(self, claimed: _Claimed) -> None:
        try:
            answer = await call_provider(
                self.runtime.provider, self.settings, claimed.kind, claimed.payload
            )
        except asyncio.CancelledError:
            # Shutting down: hand the item back at once instead of waiting for the lease.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unclaim(claimed))
            raise
        await self._record(claimed, answer)
        await self._complete_if_done(claimed.batch_id)

    async def _record(self, claimed: _Claimed, answer: ProviderResult | ProviderError) -> None:
        async with self.runtime.sessionmaker() as session, session.begin():
            item = await repository.lock_item(session, claimed.item_id)
            if item.status != "running" or item.claim_token != claimed.token:
                return  # our lease ran out and another worker owns the item now
            now = utcnow()
            item.model = answer.model
            item.input_tokens = answer.input_tokens
            item.output_tokens = answer.output_tokens
            if isinstance(answer, ProviderResult):
                item.latency_ms = answer.latency_ms
                settled = await credits.settle(
                    session,
                    item.hold_id,
                    1,
                    description=f"AI generation: {KIND_LABELS[claimed.kind.value]} (batch)",
                    batch_id=claimed.batch_id,
                    now=now,
                )
                if settled.outcome is HoldOutcome.SETTLED:
                    item.status = "succeeded"
                    item.output = answer.output
                    item.credits_charged = 1
                    item.finished_at = now
                    item.claimed_until = None
                else:
                    self._fail(
                        item,
                        "generation_failed",
                        "reservation_expired",
                        "The result arrived after the credit reservation had expired.",
                    )
                return
            if (
                answer.kind is FailureKind.UNAVAILABLE
                and claimed.attempts < self.settings.batch_max_attempts
            ):
                # Rate limited: back in the queue, not before the provider's Retry-After.
                item.status = "queued"
                item.claimed_by = None
                item.claim_token = None
                retry_after = answer.retry_after_seconds or 30
                item.claimed_until = now + timedelta(seconds=retry_after)
                return
            await credits.release(session, item.hold_id, now=now)
            code = (
                "provider_unavailable"
                if answer.kind is FailureKind.UNAVAILABLE
                else "generation_failed"
            )
            self._fail(item, code, answer.reason, answer.detail)

    async def _unclaim(self, claimed: _Claimed) -> None:
        async with self.runtime.sessionmaker() as session, session.begin():
            item = await repository.lock_item(session, claimed.item_id)
            if item.status == "running" and item.claim_token == claimed.token:
                item.status = "queued"
                item.claimed_by = None
                item.claim_token = None
                item.claimed_until = None
                item.attempts = max(0, item.attempts - 1)

    async def _complete_if_done(self, batch_id: uuid.UUID) -> None:
        async with self.runtime.sessionmaker() as session, session.begin():
            await repository.complete_batch_if_done(session, batch_id, utcnow())

    # --- the heartbeat ---

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.batch_heartbeat_interval_seconds)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("batch heartbeat failed; retrying")

    async def heartbeat(self) -> None:
        """Renew this instance's leases and keep alive the holds of its items and of every
        queued item (queued items belong to no instance until claimed)."""
        settings = self.settings
        ttl = timedelta(seconds=settings.batch_hold_ttl_seconds)
        async with self.runtime.sessionmaker() as session, session.begin():
            lease_until = utcnow() + timedelta(seconds=settings.batch_lease_seconds)
            own = await repository.renew_leases(session, self.instance_id, lease_until)
            await credits.keep_alive(session, own, ttl=ttl, skip_locked=True)
        async with self.runtime.sessionmaker() as session, session.begin():
            queued = await repository.queued_item_holds(session)
        for start in range(0, len(queued), HOLD_CHUNK):
            async with self.runtime.sessionmaker() as session, session.begin():
                chunk = queued[start : start + HOLD_CHUNK]
                await credits.keep_alive(session, chunk, ttl=ttl, skip_locked=True)


async def _sweep_interrupted_forever(runtime: GenerationRuntime) -> None:
    while True:
        try:
            failed = await fail_interrupted_generations(runtime.sessionmaker)
            if failed:
                logger.warning("failed %d interrupted generation(s), uncharged", failed)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("sweeping interrupted generations failed; retrying")
        await asyncio.sleep(runtime.settings.hold_sweep_interval_seconds)


@dataclass
class GenerationStack:
    """Generations' part of the app's lifespan."""

    runtime: GenerationRuntime
    workers: BatchWorkers
    sweeper: asyncio.Task[None]

    async def stop(self) -> None:
        self.sweeper.cancel()
        await asyncio.gather(self.sweeper, return_exceptions=True)
        await self.workers.stop()
        await self.runtime.drain()


def start_generation(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> GenerationStack:
    runtime = GenerationRuntime(settings, sessionmaker, create_provider(settings))
    workers = BatchWorkers(runtime)
    workers.start()
    sweeper = asyncio.create_task(_sweep_interrupted_forever(runtime), name="generation-sweeper")
    return GenerationStack(runtime, workers, sweeper)
