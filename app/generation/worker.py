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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.credits import service as credits
from app.credits.service import Charge, HoldOutcome
from app.db import StatementRunner, utcnow
from app.generation import fair, queue
from app.generation.background import every, keep_holds_alive
from app.generation.calls import call_provider
from app.generation.lifecycle import LEASED, ItemState, check_move
from app.generation.limiter import AdaptiveLimiter
from app.generation.providers import create_provider
from app.generation.providers.base import (
    RATE_LIMITS_REQUEUED,
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)
from app.generation.recovery import fail_interrupted_generations
from app.generation.runtime import GenerationRuntime
from app.generation.views import charge_description

logger = logging.getLogger(__name__)

RECORD_GROUP = 64
"""Results recorded in one transaction at most."""
RECORD_LINGER_SECONDS = 0.05
"""How long the recorder waits after a first result for others to join its transaction.
Recording is off the workers' path (a worker starts its next item at once), so the wait
costs no throughput; it turns about one transaction per result into one per three or four
(docs/benchmarks.md), and a result reaches the batch's events at most this much later.
It ends early once no call is left in flight, so a batch's last results do not wait."""


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
    """One claimer fills a small local queue (a quarter of `GENERATION_CONCURRENCY` items
    ahead of the workers, claimed fairly in one statement) and `GENERATION_CONCURRENCY`
    workers generate from it.
    A worker takes a slot of the process's provider limiter, then moves its item
    `claimed -> generating` in a committed update (grouped with the other workers' moves)
    and only then calls the model: a cancel committed before that update stops the item."""

    def __init__(self, runtime: GenerationRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.concurrency = runtime.settings.generation_concurrency
        self.instance_id = instance_name()
        self.ahead = max(1, self.concurrency // 2)
        """Items claimed ahead of free workers: enough that a worker rarely waits for a claim,
        few enough that a batch that just arrived waits behind few items claimed before it
        (at most half a round of calls)."""
        self.claim_at_least = max(1, self.ahead // 2)
        """A claim is made for this many items at least (unless a worker is idle): results
        come in bursts, and claiming for each finished item alone costs a transaction per
        item."""
        self._queue: asyncio.Queue[_Claimed] = asyncio.Queue()
        self._results: asyncio.Queue[tuple[_Claimed, ProviderResult | ProviderError] | None] = (
            asyncio.Queue()
        )
        self._busy = 0
        self._touched: set[uuid.UUID] = set()
        """Batches this instance worked on that may have just finished."""
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: list[tuple[_Claimed, asyncio.Future[bool]]] = []
        self._starters: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()
        """Set when a worker hands in a result (the recorder's linger ends early when no
        call is left in flight)."""

    @property
    def _nudge(self) -> asyncio.Event:
        """Set when a batch is created here or a worker finished an item."""
        return self.runtime.batch_created

    def start(self) -> None:
        self._recorder = asyncio.create_task(self._record_forever(), name="batch-recorder")
        self._tasks.append(asyncio.create_task(self._claim_forever(), name="batch-claimer"))
        for number in range(self.concurrency):
            self._tasks.append(
                asyncio.create_task(self._work_forever(), name=f"batch-worker-{number}")
            )
        self._tasks.append(asyncio.create_task(self._heartbeat_forever(), name="batch-heartbeat"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._starters:
            await asyncio.gather(*self._starters, return_exceptions=True)
        # Record the results already in, then stop.
        self._results.put_nowait(None)
        await asyncio.gather(self._recorder, return_exceptions=True)
        # Hand back what was claimed but not started, so another instance starts it now.
        waiting = []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for claimed in waiting:
            with contextlib.suppress(Exception):
                await self._hand_back(claimed)
        # And whatever a task stopped mid-way left claimed (a claim committed but not yet
        # queued here when the claimer was cancelled).
        with contextlib.suppress(Exception):
            async with self.runtime.sessionmaker() as session, session.begin():
                await queue.hand_back_all(session, self.instance_id)

    # --- claiming ---

    async def _claim_forever(self) -> None:
        while True:
            # Cleared before looking, so a nudge from now on wakes the wait below (and a wait
            # on a set event would return at once, without yielding: a busy loop).
            self._nudge.clear()
            wanted = min(
                self.concurrency,
                self.concurrency + self.ahead - self._busy - self._queue.qsize(),
            )
            idle_worker = self._busy + self._queue.qsize() < self.concurrency
            if wanted >= self.claim_at_least or (wanted > 0 and idle_worker):
                if self._starters and not idle_worker:
                    # Workers' starts first: they hold provider slots; a claim ahead can wait.
                    # (`wait`, not `gather`: stopping the claimer must not cancel them.)
                    await asyncio.wait(set(self._starters))
                try:
                    claimed, served = await self.claim(wanted)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("claiming batch items failed; retrying")
                    claimed, served = [], []
                for item in claimed:
                    self._queue.put_nowait(item)
                if served:
                    # After the workers have their items (this update may wait for a
                    # recorder's lock on the batch row), before the next claim reads it.
                    await self._mark_batches_claimed(served, utcnow())
                if claimed:
                    continue
                await self._complete_touched()
            # `asyncio.timeout`, not `wait_for`: on 3.11 `wait_for` can swallow a cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.batch_poll_interval_seconds):
                    await self._nudge.wait()

    async def claim(self, limit: int) -> tuple[list[_Claimed], list[uuid.UUID]]:
        """Claim up to `limit` items, fairly, in one short transaction: the items to
        generate, and the batches served (whose turn the caller then records). Claimed items
        that need no call (out of attempts, or their hold expired) are failed by the
        recorder."""
        settings = self.settings
        now = utcnow()
        token = uuid.uuid4()
        lease_until = now + timedelta(seconds=settings.batch_lease_seconds)
        ttl = timedelta(seconds=settings.batch_hold_ttl_seconds)
        if self.runtime.statements is not None:  # PostgreSQL: one statement, one round trip
            rows, alive = await fair.claim_and_keep_alive(
                self.runtime.statements,
                now,
                limit,
                instance_id=self.instance_id,
                claim_token=token,
                claimed_until=lease_until,
                max_attempts=settings.batch_max_attempts,
                hold_expires_at=now + ttl,
            )
        else:
            async with self.runtime.sessionmaker() as session, session.begin():
                rows = await queue.claim_fairly(
                    session,
                    now,
                    limit,
                    instance_id=self.instance_id,
                    claim_token=token,
                    claimed_until=lease_until,
                )
                fresh = [row for row in rows if row.attempts <= settings.batch_max_attempts]
                alive = set(
                    await credits.keep_alive(
                        session, [row.hold_id for row in fresh], ttl=ttl, now=now
                    )
                )
        claimed = []
        for row in rows:
            self._touched.add(row.batch_id)
            item = _Claimed(
                row.id, token, row.batch_id, GenerationKind(row.kind), dict(row.input), row.attempts
            )
            if row.attempts > settings.batch_max_attempts:
                self._results.put_nowait(
                    (item, ProviderError(FailureKind.FAILED, "interrupted", OUT_OF_ATTEMPTS))
                )
            elif row.hold_id not in alive:
                # No live worker kept its reservation: the credit went (or goes) back.
                self._results.put_nowait(
                    (item, ProviderError(FailureKind.FAILED, "reservation_expired", EXPIRED))
                )
            else:
                claimed.append(item)
        return claimed, sorted({row.batch_id for row in rows})

    async def _mark_batches_claimed(self, batch_ids: list[uuid.UUID], now: datetime) -> None:
        if self.runtime.statements is not None:  # PostgreSQL: one statement
            await self.runtime.statements.fetchrow(queue.MARK_BATCHES_CLAIMED_SQL, batch_ids, now)
            return
        async with self.runtime.sessionmaker() as session, session.begin():
            await queue.mark_batches_claimed(session, batch_ids, now)

    async def _complete_touched(self) -> None:
        """Nothing left to claim: mark finished any batch this instance worked on whose
        last item is done. Runs after the items' own commits, so of two instances finishing
        a batch's last items at once, the later check sees both."""
        for batch_id in list(self._touched):
            try:
                async with self.runtime.sessionmaker() as session, session.begin():
                    await queue.complete_batch_if_done(session, batch_id, utcnow())
                    still_pending = not await queue.is_finished(session, batch_id)
            except Exception:
                logger.exception("checking batch %s for completion failed", batch_id)
                continue
            if not still_pending:
                self._touched.discard(batch_id)

    # --- working ---

    async def _work_forever(self) -> None:
        RATE_LIMITS_REQUEUED.set(True)  # this task's context only
        while True:
            claimed = await self._queue.get()
            self._busy += 1
            try:
                async with self.runtime.limiter.slot():
                    if not await self._start(claimed):
                        # Canceled (or taken over) before its call: nothing was sent.
                        self._nudge.set()
                        continue
                    answer = await call_provider(
                        self.runtime.provider, self.settings, claimed.kind, claimed.payload
                    )
            except asyncio.CancelledError:
                # Shutting down: hand the item back at once instead of waiting for the lease.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._hand_back(claimed))
                raise
            finally:
                self._busy -= 1
            self._results.put_nowait((claimed, answer))
            self._arrived.set()
            self._nudge.set()

    async def _start(self, claimed: _Claimed) -> bool:
        """`claimed -> generating`, committed: True if this worker may call the model now.
        Workers starting at the same time share one update (group commit)."""
        started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._starting.append((claimed, started))
        if len(self._starting) == 1:
            # The first start of this instant opens a group; groups run side by side, so a
            # worker never waits for another group's round trip.
            starter = asyncio.create_task(self._start_group(), name="batch-starter")
            self._starters.add(starter)
            starter.add_done_callback(self._starters.discard)
        return await started

    async def _start_generating(
        self, claims: list[tuple[int, uuid.UUID]], lease_until: datetime
    ) -> set[int]:
        statements = self.runtime.statements
        if statements is not None:  # PostgreSQL: one statement, one round trip
            row = await statements.fetchrow(
                queue.START_GENERATING_SQL,
                [item_id for item_id, _ in claims],
                [token for _, token in claims],
                lease_until,
            )
            return set(row["ids"])
        async with self.runtime.sessionmaker() as session, session.begin():
            return await queue.start_generating(session, claims, lease_until)

    async def _start_group(self) -> None:
        await asyncio.sleep(0)  # let workers finishing in the same instant join this update
        group, self._starting = self._starting, []
        lease_until = utcnow() + timedelta(seconds=self.settings.batch_lease_seconds)
        try:
            moved = await self._start_generating(
                [(c.item_id, c.token) for c, _ in group], lease_until
            )
        except Exception:
            # Not started: the items stay claimed and another claim takes them over.
            logger.exception("starting %d batch item(s) failed", len(group))
            moved = set()
        for claimed, started in group:
            if not started.done():
                started.set_result(claimed.item_id in moved)

    async def _record_forever(self) -> None:
        """Record results as they come, all that are waiting in one transaction."""
        while True:
            first = await self._results.get()
            if first is None:
                return
            group = [first]
            stop = False
            await self._linger()
            while not self._results.empty() and len(group) < RECORD_GROUP:
                more = self._results.get_nowait()
                if more is None:
                    stop = True
                    break
                group.append(more)
            try:
                await self.record(group)  # type: ignore[arg-type]
            except Exception:
                logger.exception("recording %d batch results failed; one by one now", len(group))
                for one in group:
                    try:
                        await self.record([one])  # type: ignore[list-item]
                    except Exception:
                        # The lease runs out and the item is generated again, uncharged so far.
                        logger.exception("recording batch item %s failed", one[0].item_id)
            self.runtime.feeds.wake({claimed.batch_id for claimed, _ in group})
            self._nudge.set()
            if stop:
                return

    async def _linger(self) -> None:
        """Wait up to `RECORD_LINGER_SECONDS` for more results, less if no call is left in
        flight (a batch's last results are recorded at once)."""
        deadline = asyncio.get_running_loop().time() + RECORD_LINGER_SECONDS
        while self._busy and self._results.qsize() < RECORD_GROUP - 1:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            if asyncio.get_running_loop().time() >= deadline:
                return

    async def record(self, results: list[tuple[_Claimed, ProviderResult | ProviderError]]) -> None:
        """Charge the credit of each item that succeeded and give back the others, for the
        items whose claim is still ours (a lease that ran out belongs to another worker).
        A rate-limited item goes back to the queue without spending an attempt. Each item
        that finishes takes its batch's next event number."""
        now = utcnow()
        async with self.runtime.sessionmaker() as session, session.begin():
            batches = await queue.lock_batches(session, [c.batch_id for c, _ in results])
            items = await queue.lock_items(
                session, [claimed.item_id for claimed, _ in results], with_input=False
            )
            owned = []
            for claimed, answer in results:
                item = items.get(claimed.item_id)
                if (
                    item is not None
                    and item.status in LEASED
                    and (item.claim_token == claimed.token)
                ):
                    owned.append((claimed, answer, item))
            charges = [
                Charge(
                    item.hold_id,
                    1,
                    f"{charge_description(claimed.kind)} (batch)",
                    batch_id=claimed.batch_id,
                )
                for claimed, answer, item in owned
                if isinstance(answer, ProviderResult)
            ]
            settled = await credits.settle_many(session, charges, now=now) if charges else {}
            released = []
            for claimed, answer, item in owned:
                batch = batches[claimed.batch_id]
                if answer.model is not None:
                    item.model = answer.model
                    item.input_tokens = answer.input_tokens
                    item.output_tokens = answer.output_tokens
                item.claimed_until = None
                if isinstance(answer, ProviderResult):
                    item.latency_ms = answer.latency_ms
                    if settled[item.hold_id].outcome is HoldOutcome.SETTLED:
                        queue.finish_item(item, batch, ItemState.SUCCEEDED, now)
                        item.output = answer.output
                        item.credits_charged = 1
                    else:
                        queue.fail_item(item, batch, "reservation_expired", EXPIRED_LATE, now)
                elif answer.kind is FailureKind.UNAVAILABLE:
                    released.extend(_requeue(item, batch, answer, now))
                else:
                    released.append(item.hold_id)
                    queue.fail_item(item, batch, answer.reason, answer.detail, now)
            if released:
                await credits.release_many(session, released, now=now)
            await session.flush()
            # In this transaction, under the batch rows' locks: whoever finishes a batch's
            # items holds its row, so of two instances finishing the last items at once the
            # later one sees both. Not only when the claimer runs dry, so a batch beside a
            # long one completes as soon as its last item does.
            for batch_id in sorted(batches):
                await queue.complete_batch_if_done(session, batch_id, now)
            await queue.notify(
                session,
                queue.BATCH_CHANGED_CHANNEL,
                [str(batch_id) for batch_id in sorted(batches)],
            )

    async def _hand_back(self, claimed: _Claimed) -> None:
        """Shutting down: the item goes back to the queue (its claim not counted), or is
        canceled if its batch was canceled meanwhile."""
        now = utcnow()
        async with self.runtime.sessionmaker() as session, session.begin():
            batch = (await queue.lock_batches(session, [claimed.batch_id]))[claimed.batch_id]
            locked = await queue.lock_items(session, [claimed.item_id], with_input=False)
            item = locked.get(claimed.item_id)
            if item is None or item.status not in LEASED or item.claim_token != claimed.token:
                return
            if batch.status == "canceled":
                queue.finish_item(item, batch, ItemState.CANCELED, now)
                await credits.release(session, item.hold_id, now=now)
                return
            check_move(item.status, ItemState.QUEUED)
            await queue.unclaim(session, item.id, claimed.token, spend_attempt=False)

    # --- the heartbeat ---

    async def _heartbeat_forever(self) -> None:
        await every(
            self.settings.batch_heartbeat_interval_seconds, self.heartbeat, "batch heartbeat"
        )

    async def heartbeat(self) -> None:
        """Renew this instance's leases and keep alive the holds of its items and of every
        queued item (queued items belong to no instance until claimed); cancel what dead
        workers left of canceled batches; complete batches nobody completed."""
        settings = self.settings
        ttl = timedelta(seconds=settings.batch_hold_ttl_seconds)
        async with self.runtime.sessionmaker() as session, session.begin():
            lease_until = utcnow() + timedelta(seconds=settings.batch_lease_seconds)
            own = await queue.renew_leases(session, self.instance_id, lease_until)
            await credits.keep_alive(session, own, ttl=ttl, skip_locked=True)
        async with self.runtime.sessionmaker() as session, session.begin():
            stale = await queue.canceled_batches_with_stale_items(session, utcnow())
        for batch_id in stale:
            async with self.runtime.sessionmaker() as session, session.begin():
                now = utcnow()
                batch = (await queue.lock_batches(session, [batch_id]))[batch_id]
                holds = await queue.cancel_stale_items(session, batch, now)
                await credits.release_many(session, holds, now=now)
        async with self.runtime.sessionmaker() as session, session.begin():
            unnumbered = await queue.batches_with_unnumbered_items(session)
        for batch_id in unnumbered:
            async with self.runtime.sessionmaker() as session, session.begin():
                batch = (await queue.lock_batches(session, [batch_id]))[batch_id]
                await queue.number_finished_items(session, batch)
        async with self.runtime.sessionmaker() as session, session.begin():
            await queue.complete_finished_batches(session, utcnow())
        async with self.runtime.sessionmaker() as session, session.begin():
            queued = await queue.queued_item_holds(session)
        await keep_holds_alive(self.runtime.sessionmaker, queued, ttl)


OUT_OF_ATTEMPTS = "Its workers kept stopping."
EXPIRED = "Its credit reservation expired before it could be generated."
EXPIRED_LATE = "The result arrived after the credit reservation had expired."


def _requeue(item: Any, batch: Any, answer: ProviderError, now: Any) -> list[uuid.UUID]:
    """Rate limited: back in the queue, not before the provider's Retry-After, its attempt
    not spent (the hold lives on: the heartbeat keeps queued items' holds). If its batch was
    canceled meanwhile, canceled instead; the hold to release, if so."""
    if batch.status == "canceled":
        queue.finish_item(item, batch, ItemState.CANCELED, now)
        return [item.hold_id]
    item.status = check_move(item.status, ItemState.QUEUED)
    item.claimed_by = None
    item.claim_token = None
    item.attempts = max(0, item.attempts - 1)
    wait = answer.retry_after_exact
    if wait is None:
        wait = answer.retry_after_seconds or 30
    item.claimed_until = now + timedelta(seconds=wait)
    return []


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
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    statements: StatementRunner | None = None,
) -> GenerationStack:
    limiter = AdaptiveLimiter(settings.generation_concurrency)
    runtime = GenerationRuntime(
        settings, sessionmaker, create_provider(settings, limiter), statements, limiter=limiter
    )
    workers = BatchWorkers(runtime)
    workers.start()
    sweeper = asyncio.create_task(_sweep_interrupted_forever(runtime), name="generation-sweeper")
    return GenerationStack(runtime, workers, sweeper)
