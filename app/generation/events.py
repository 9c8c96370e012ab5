"""Batch events: one feed per batch per process, fanned out to that batch's streams.

Every finished item carries its batch's next event number (`event_seq`), taken under the
batch row's lock in the transaction that finished it, so numbers follow commit order and
any instance can resume a stream after any number (`Last-Event-ID`). A feed reads its
batch when told that it changed (by this process's recorder, or by any instance through
PostgreSQL `NOTIFY`, `queue.BATCH_CHANGED_CHANNEL`) and at least once per interval however
many streams follow it: the database sees one cheap read per change (or interval) per
batch and instance, not one per stream.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.generation import lifecycle, queue
from app.generation.models import GenerationBatch, GenerationBatchItem
from app.generation.schemas import BatchItemRead

logger = logging.getLogger(__name__)

RETRY_MILLISECONDS = 3000
"""The reconnection delay suggested to clients (`retry:` of the first event)."""


@dataclass(frozen=True)
class BatchEvent:
    """One numbered event: the items it finished (several for a cancel) and the batch's
    counters right after it."""

    seq: int
    items: tuple[BatchItemRead, ...]
    counts: dict[str, int]


@dataclass
class BatchFeed:
    batch_id: uuid.UUID
    batch: GenerationBatch | None = None
    """The batch row as last read (status, timestamps)."""
    events: list[BatchEvent] = field(default_factory=list)
    head: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    followers: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    news: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the batch changed (`BatchFeeds.wake`): read now, not at the next poll."""

    @property
    def finished(self) -> bool:
        """Nothing more will happen: the batch is final and every item finished."""
        batch = self.batch
        if batch is None or batch.status not in ("completed", "canceled"):
            return False
        return sum(self.counts.get(s, 0) for s in FINISHED_PUBLISHED) >= batch.total

    def after(self, seq: int) -> list[BatchEvent]:
        """Events numbered above `seq` (binary search: the list is in order)."""
        low, high = 0, len(self.events)
        while low < high:
            middle = (low + high) // 2
            if self.events[middle].seq <= seq:
                low = middle + 1
            else:
                high = middle
        return self.events[low:]

    def add(self, batch: GenerationBatch, items: Iterable[GenerationBatchItem]) -> bool:
        """Take in a fresh read; True if anything changed."""
        grew = False
        grouped: dict[int, list[GenerationBatchItem]] = {}
        for item in items:
            if item.event_seq is not None and item.event_seq > self.head:
                grouped.setdefault(item.event_seq, []).append(item)
        for seq in sorted(grouped):
            reads = []
            for item in sorted(grouped[seq], key=lambda i: i.index):
                status = lifecycle.published(item.status)
                self.counts[status] = self.counts.get(status, 0) + 1
                reads.append(_item_read(item))
            self.events.append(BatchEvent(seq, tuple(reads), dict(self.counts)))
            self.head = seq
            grew = True
        status_changed = self.batch is None or (batch.status, batch.completed_at) != (
            self.batch.status,
            self.batch.completed_at,
        )
        self.batch = batch
        return grew or status_changed


FINISHED_PUBLISHED = frozenset(lifecycle.published(state) for state in lifecycle.FINISHED)


def _item_read(item: GenerationBatchItem) -> BatchItemRead:
    from app.generation.views import item_read  # the one item view

    return item_read(item)


class BatchFeeds:
    """The process's feeds, by batch; a feed lives while a stream follows it."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], interval_seconds: float
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval_seconds
        self._feeds: dict[uuid.UUID, BatchFeed] = {}
        self.polls = 0
        """Reads made by all feeds (tests and benchmarks count them)."""

    @contextlib.contextmanager
    def follow(self, batch_id: uuid.UUID) -> Iterator[BatchFeed]:
        feed = self._feeds.get(batch_id)
        if feed is None:
            feed = self._feeds[batch_id] = BatchFeed(batch_id)
            feed.task = asyncio.create_task(self._run(feed), name=f"batch-feed-{batch_id}")
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(batch_id) is feed:
                del self._feeds[batch_id]
                if feed.task is not None:
                    feed.task.cancel()

    def wake(self, batch_ids: Iterable[uuid.UUID]) -> None:
        """These batches just changed (this process's recorder committed, or another
        instance's `NOTIFY` arrived): their feeds read now instead of at their next poll."""
        for batch_id in batch_ids:
            feed = self._feeds.get(batch_id)
            if feed is not None:
                feed.news.set()

    async def close(self) -> None:
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()

    async def _run(self, feed: BatchFeed) -> None:
        while True:
            feed.news.clear()  # before reading: a wake from now on is read next time
            try:
                changed = await self._read(feed)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reading the events of batch %s failed", feed.batch_id)
                changed = False
            if feed.batch is not None:
                feed.ready.set()
            if changed:
                async with feed.changed:
                    feed.changed.notify_all()
            if feed.finished:
                return  # nothing more can happen; followers read what is here
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await feed.news.wait()

    async def _read(self, feed: BatchFeed) -> bool:
        self.polls += 1
        async with self._sessionmaker() as session:
            batch = await queue.batch_event_head(session, feed.batch_id)
            if batch is None:
                return False
            items: list[GenerationBatchItem] = []
            if batch.event_seq > feed.head:
                items = await queue.items_after(session, feed.batch_id, feed.head)
        return feed.add(batch, items)


@dataclass(frozen=True)
class StreamEvent:
    """What the route sends: `progress`/`done` with data, or a keep-alive (`event` None)."""

    event: str | None
    id: str | None = None
    data: dict[str, Any] | None = None
    retry: int | None = None


def parse_last_event_id(value: str | None) -> int | None:
    """A `Last-Event-ID` we gave out, or None (missing, malformed: the current state
    first)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


async def follow_batch(
    feeds: BatchFeeds,
    batch_id: uuid.UUID,
    last_event_id: int | None,
    *,
    ping_seconds: float,
    snapshot: Any,
) -> AsyncIterator[StreamEvent]:
    """The stream of one client. Without a usable `last_event_id` (missing, malformed, or
    not one of this batch's numbers) it starts with the current state (`progress`, no
    item); with one, it sends what came after it. Then `progress` per event and `done`.
    `snapshot(batch, counts)` renders the batch counters."""
    with feeds.follow(batch_id) as feed:
        await feed.ready.wait()
        retry: int | None = RETRY_MILLISECONDS
        if last_event_id is None or last_event_id > feed.head:
            position = feed.head
            data = {"batch": snapshot(feed.batch, feed.counts), "item": None}
            yield StreamEvent("progress", str(position), data, retry)
            retry = None
        else:
            position = last_event_id
        while True:
            for event in feed.after(position):
                item = event.items[0].model_dump(mode="json") if len(event.items) == 1 else None
                data = {"batch": snapshot(feed.batch, event.counts), "item": item}
                yield StreamEvent("progress", str(event.seq), data, retry)
                retry = None
                position = event.seq
            if feed.finished and position >= feed.head:
                data = {"batch": snapshot(feed.batch, feed.counts), "item": None}
                yield StreamEvent("done", str(position), data, retry)
                return
            if not await _wait_for_news(feed, position, ping_seconds):
                yield StreamEvent(None)


async def _wait_for_news(feed: BatchFeed, position: int, seconds: float) -> bool:
    """False if nothing happened for `seconds` (time for a keep-alive)."""
    async with feed.changed:
        if feed.head > position or feed.finished:
            return True
        try:
            async with asyncio.timeout(seconds):
                await feed.changed.wait()
        except TimeoutError:
            return False
    return True
