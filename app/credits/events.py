"""Live balance updates and key revocations: every committed change to an account's
balance reaches the live balance streams of every server instance, and every revoked API
key closes its open streams (balance and batch) on every instance.

The ledger marks the accounts a transaction changed (`mark_balance_changed`), and a key's
revocation marks the key; the session hooks below turn that into a message only when the
transaction commits, whatever code path made the change. On PostgreSQL the message is
`pg_notify` issued inside the transaction (PostgreSQL delivers it at commit, to every
instance's `LISTEN` connection, or never if the transaction rolls back); on SQLite, a
single-process database, it is published in-process after the commit.

Fan-out: an instance that hears about an account reads its balance once and hands the same
event (id and JSON body) to every stream of that account on the instance; changes that
arrive while that read runs are coalesced into one more read. An event's id is derived
from the balance it carries, so it means the same on every instance: a client resuming
with `Last-Event-ID` is sent the current balance only if it differs from the one it has.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
from fastapi.sse import format_sse_event
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.service import KEYS_REVOKED_KEY
from app.config import Settings
from app.credits.schemas import BalanceRead
from app.credits.service import BALANCE_CHANGED_KEY
from app.credits.views import balance_snapshot

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "rankframe_balance_changed"
REVOKED_CHANNEL = "rankframe_key_revoked"
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
LISTENER_CHECK_SECONDS = 10.0
LISTENER_APPLICATION_NAME = "rankframe-balance-listener"
READ_RETRY_SECONDS = 1.0
RETRY_MILLISECONDS = 3000
"""`retry:` of a stream's first event: how long a client waits before reconnecting."""


def listener_application_name(pid: int | None = None) -> str:
    """How the listener shows in `pg_stat_activity`: per process, for operators (and tests)."""
    return f"{LISTENER_APPLICATION_NAME}:{pid or os.getpid()}"


@dataclass(frozen=True)
class BalanceEvent:
    """One `balance` event, the same for every stream of the account: formatted once (in
    FastAPI's SSE format) and written as is by each."""

    id: str
    """Derived from the balance it carries (not its `as_of`): equal on every instance."""
    data: str
    """The JSON of `GET /v1/balance`."""
    wire: bytes
    first_wire: bytes
    """The same with `retry:`, for a connection's first event."""


def balance_event(balance: BalanceRead) -> BalanceEvent:
    state = balance.model_dump_json(exclude={"as_of"})
    event_id = hashlib.blake2b(state.encode(), digest_size=9).hexdigest()
    data = balance.model_dump_json()
    return BalanceEvent(
        id=event_id,
        data=data,
        wire=format_sse_event(data_str=data, event="balance", id=event_id),
        first_wire=format_sse_event(
            data_str=data, event="balance", id=event_id, retry=RETRY_MILLISECONDS
        ),
    )


class _Watcher(Protocol):
    def revoke(self) -> None: ...


class KeyWatch:
    """A stream's interest in its API key: `revoked` is set when the key is revoked."""

    __slots__ = ("revoked",)

    def __init__(self) -> None:
        self.revoked = asyncio.Event()

    def revoke(self) -> None:
        self.revoked.set()


class Subscription:
    """One balance stream: the account's latest event, and whether its key was revoked."""

    __slots__ = ("account_id", "latest", "revoked", "_changed")

    def __init__(self, account_id: uuid.UUID) -> None:
        self.account_id = account_id
        self.latest: BalanceEvent | None = None
        self.revoked = False
        self._changed = asyncio.Event()

    def deliver(self, balance: BalanceEvent) -> None:
        self.latest = balance
        self._changed.set()

    def revoke(self) -> None:
        self.revoked = True
        self._changed.set()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a heartbeat interval
        """True when something arrived (changes since the last wait are coalesced), False
        when `timeout` passed without anything."""
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True


BalanceReader = Callable[[uuid.UUID], Awaitable[BalanceEvent]]
RevokedAmong = Callable[[list[str]], Awaitable[set[str]]]


class BalanceBroadcaster:
    """The process's registry of live streams: balance subscriptions by account, key
    watches by API key (its public lookup id)."""

    def __init__(self, read: BalanceReader, revoked_among: RevokedAmong) -> None:
        self._read = read
        self._revoked_among = revoked_among
        self._loop = asyncio.get_running_loop()
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._watches: dict[str, set[_Watcher]] = {}
        self._dirty: set[uuid.UUID] = set()
        self._refreshing: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.reads = 0
        """Balance reads for fan-out so far (one per change per instance, at most)."""

    # --- subscribing ---

    @contextlib.contextmanager
    def subscribe(self, account_id: uuid.UUID, key: str | None) -> Iterator[Subscription]:
        subscription = Subscription(account_id)
        self._subscriptions.setdefault(account_id, set()).add(subscription)
        try:
            with self._watching(key, subscription):
                yield subscription
        finally:
            subscribers = self._subscriptions.get(account_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[account_id]

    @contextlib.contextmanager
    def watch_key(self, key: str | None) -> Iterator[KeyWatch]:
        watch = KeyWatch()
        with self._watching(key, watch):
            yield watch

    @contextlib.contextmanager
    def _watching(self, key: str | None, watcher: _Watcher) -> Iterator[None]:
        if key is None:
            yield
            return
        self._watches.setdefault(key, set()).add(watcher)
        try:
            yield
        finally:
            watchers = self._watches.get(key)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watches[key]

    async def current(self, account_id: uuid.UUID) -> BalanceEvent:
        """The account's balance now (a new stream's first event)."""
        return await self._read(account_id)

    async def is_revoked(self, key: str | None) -> bool:
        """Whether `key` was revoked (before a watch on it began, say)."""
        return key is not None and bool(await self._revoked_among([key]))

    # --- publishing ---

    def publish(self, account_ids: Iterable[uuid.UUID]) -> None:
        """The accounts' balances changed: read each once, fan the event out."""
        self._soon(self._schedule, list(account_ids))

    def publish_all(self) -> None:
        """Every stream re-reads its balance (after a gap in which changes may be missed)."""
        self.publish(list(self._subscriptions))

    def revoke(self, keys: Iterable[str]) -> None:
        """The keys were revoked: close their streams."""
        self._soon(self._revoke, list(keys))

    async def recheck_keys(self) -> None:
        """After a gap in which revocations may have been missed: ask the database."""
        keys = list(self._watches)
        if keys:
            self._revoke(list(await self._revoked_among(keys)))

    def _soon(self, action: Callable[[list[T]], None], items: list[T]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            action(items)
        else:  # a commit hook on another thread
            self._loop.call_soon_threadsafe(action, items)

    def _revoke(self, keys: list[str]) -> None:
        for key in keys:
            for watcher in list(self._watches.get(key, ())):
                watcher.revoke()

    def _schedule(self, account_ids: list[uuid.UUID]) -> None:
        for account_id in account_ids:
            if account_id not in self._subscriptions:
                continue
            self._dirty.add(account_id)
            if account_id not in self._refreshing:
                task = asyncio.create_task(self._refresh(account_id))
                self._refreshing[account_id] = task

    async def _refresh(self, account_id: uuid.UUID) -> None:
        try:
            while account_id in self._dirty and account_id in self._subscriptions:
                self._dirty.discard(account_id)
                try:
                    self.reads += 1
                    balance = await self._read(account_id)
                except Exception:
                    logger.warning("reading a changed balance failed; retrying", exc_info=True)
                    self._dirty.add(account_id)
                    await asyncio.sleep(READ_RETRY_SECONDS)
                    continue
                for subscription in list(self._subscriptions.get(account_id, ())):
                    subscription.deliver(balance)
        finally:
            self._refreshing.pop(account_id, None)

    async def aclose(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        await asyncio.gather(*self._refreshing.values(), return_exceptions=True)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())


async def until_revoked(
    events: AsyncIterator[T], broadcaster: BalanceBroadcaster, key: str | None
) -> AsyncIterator[T]:
    """`events` until the API key `key` is revoked (on any instance), then the end. For
    streams whose own code knows nothing of keys (a batch's events)."""
    with broadcaster.watch_key(key) as watch:
        if await broadcaster.is_revoked(key):
            return
        revoked = asyncio.ensure_future(watch.revoked.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following, revoked}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await following
                    return
                try:
                    item = following.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            revoked.cancel()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


# In-process delivery for SQLite, by database URL: every app of this process on that file.
_local: dict[str, set[BalanceBroadcaster]] = {}


@event.listens_for(Session, "before_commit")
def _notify_in_transaction(session: Session) -> None:
    changed = session.info.get(BALANCE_CHANGED_KEY)
    revoked = session.info.get(KEYS_REVOKED_KEY)
    if not (changed or revoked) or session.get_bind().dialect.name != "postgresql":
        return
    notify = text("SELECT pg_notify(:channel, :payload)")
    for account_id in sorted(changed or ()):
        session.execute(notify, {"channel": CHANNEL, "payload": str(account_id)})
    for key in sorted(revoked or ()):
        session.execute(notify, {"channel": REVOKED_CHANNEL, "payload": key})


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    changed = session.info.pop(BALANCE_CHANGED_KEY, None)
    revoked = session.info.pop(KEYS_REVOKED_KEY, None)
    if not (changed or revoked):
        return
    engine = session.get_bind().engine
    if engine.dialect.name == "postgresql":
        return  # delivered by NOTIFY, to this process too
    for broadcaster in list(_local.get(str(engine.url), ())):
        if changed:
            broadcaster.publish(changed)
        if revoked:
            broadcaster.revoke(revoked)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(BALANCE_CHANGED_KEY, None)
    session.info.pop(KEYS_REVOKED_KEY, None)


class PostgresListener:
    """`LISTEN` on a dedicated connection, reconnecting whenever it drops."""

    def __init__(
        self,
        database_url: str,
        broadcaster: BalanceBroadcaster,
        channels: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._broadcaster = broadcaster
        self._channels = dict(channels or {})
        """Other domains' channels on the same connection: each payload to its callback."""
        self.connected = asyncio.Event()

    def _on_balance(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            account_id = uuid.UUID(payload)
        except ValueError:
            return
        self._broadcaster.publish([account_id])

    def _on_revoked(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._broadcaster.revoke([payload])

    def _on_other(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            self._channels[channel](payload)
        except Exception:
            logger.exception("handling a notification on %s failed", channel)

    async def run(self) -> None:
        attempt = 0
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    server_settings={"application_name": listener_application_name()},
                )
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_balance)
                await connection.add_listener(REVOKED_CHANNEL, self._on_revoked)
                for channel in self._channels:
                    await connection.add_listener(channel, self._on_other)
                if attempt:
                    logger.info("balance listener reconnected")
                    # What was committed while we were away was not heard: resync streams.
                    self._broadcaster.publish_all()
                    await self._broadcaster.recheck_keys()
                attempt = 0
                self.connected.set()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LISTENER_CHECK_SECONDS):
                            await lost.wait()
                    if not lost.is_set():
                        await connection.execute("SELECT 1")  # notices a silently dead link
                raise ConnectionError("listener connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                logger.warning(
                    "balance listener lost its connection; reconnecting",
                    extra={"error": type(exc).__name__, "retry_in_seconds": delay},
                )
                await asyncio.sleep(delay)
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)


def _readers(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> tuple[BalanceReader, RevokedAmong]:
    async def read(account_id: uuid.UUID) -> BalanceEvent:
        async with sessionmaker() as session:
            account = await accounts.get_account(session, account_id)
            return balance_event(await balance_snapshot(session, account))

    async def revoked_among(keys: list[str]) -> set[str]:
        async with sessionmaker() as session:
            return await accounts.revoked_lookup_ids(session, keys)

    return read, revoked_among


@contextlib.asynccontextmanager
async def balance_events(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    channels: Mapping[str, Callable[[str], None]] | None = None,
) -> AsyncIterator[BalanceBroadcaster]:
    """The process's broadcaster, fed by `LISTEN` (PostgreSQL) or in-process (SQLite);
    `sessionmaker` reads balances (autocommit is enough: one account at a time). The same
    listener hears `channels` for other domains (PostgreSQL only: each payload to its
    callback)."""
    broadcaster = BalanceBroadcaster(*_readers(sessionmaker))
    try:
        if settings.is_sqlite:
            key = str(make_url(settings.database_url))
            _local.setdefault(key, set()).add(broadcaster)
            try:
                yield broadcaster
            finally:
                _local[key].discard(broadcaster)
            return
        listener = PostgresListener(settings.listen_url, broadcaster, channels)
        task = asyncio.create_task(listener.run())
        try:
            # Start serving once changes can be heard (or after a while regardless: the
            # listener keeps trying, and streams resync when it connects).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await listener.connected.wait()
            yield broadcaster
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await broadcaster.aclose()
