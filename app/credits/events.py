"""Live balance updates: every committed change to an account's balance reaches the live
balance streams of every server instance.

The ledger marks the accounts a transaction changed (`mark_balance_changed`); the session
hooks below turn that into a message only when the transaction commits, whatever code path
made the change. On PostgreSQL the message is `pg_notify` issued inside the transaction
(PostgreSQL delivers it at commit, to every instance's `LISTEN` connection, or never if the
transaction rolls back); on SQLite, a single-process database, it is published in-process
after the commit. A stream that hears about its account re-reads the balance and sends it.
"""

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import Settings
from app.credits.service import BALANCE_CHANGED_KEY

logger = logging.getLogger(__name__)

CHANNEL = "rankframe_balance_changed"
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
LISTENER_CHECK_SECONDS = 10.0
LISTENER_APPLICATION_NAME = "rankframe-balance-listener"


def listener_application_name(pid: int | None = None) -> str:
    """How the listener shows in `pg_stat_activity`: per process, for operators (and tests)."""
    return f"{LISTENER_APPLICATION_NAME}:{pid or os.getpid()}"


class Subscription:
    """One stream's interest in one account: a flag raised by every change."""

    def __init__(self, account_id: uuid.UUID) -> None:
        self.account_id = account_id
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def notify(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._changed.set()
        else:
            self._loop.call_soon_threadsafe(self._changed.set)

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - a heartbeat interval
        """True when a change arrived (changes since the last wait are coalesced), False
        when `timeout` passed without one."""
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        self._changed.clear()
        return True


class BalanceBroadcaster:
    """The process's registry of live balance streams."""

    def __init__(self) -> None:
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}

    @contextlib.contextmanager
    def subscribe(self, account_id: uuid.UUID) -> Iterator[Subscription]:
        subscription = Subscription(account_id)
        self._subscriptions.setdefault(account_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscriptions.get(account_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[account_id]

    def publish(self, account_ids: Iterable[uuid.UUID]) -> None:
        for account_id in account_ids:
            for subscription in list(self._subscriptions.get(account_id, ())):
                subscription.notify()

    def publish_all(self) -> None:
        """Every stream re-reads its balance (after a gap in which changes may be missed)."""
        self.publish(list(self._subscriptions))

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())


# In-process delivery for SQLite, by database URL: every app of this process on that file.
_local: dict[str, set[BalanceBroadcaster]] = {}


@event.listens_for(Session, "before_commit")
def _notify_in_transaction(session: Session) -> None:
    changed = session.info.get(BALANCE_CHANGED_KEY)
    if not changed or session.get_bind().dialect.name != "postgresql":
        return
    for account_id in sorted(changed):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": str(account_id)},
        )


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    changed = session.info.pop(BALANCE_CHANGED_KEY, None)
    if not changed:
        return
    engine = session.get_bind().engine
    if engine.dialect.name == "postgresql":
        return  # delivered by NOTIFY, to this process too
    for broadcaster in list(_local.get(str(engine.url), ())):
        broadcaster.publish(changed)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(BALANCE_CHANGED_KEY, None)


class PostgresListener:
    """`LISTEN` on a dedicated connection, reconnecting whenever it drops."""

    def __init__(self, database_url: str, broadcaster: BalanceBroadcaster) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._broadcaster = broadcaster
        self.connected = asyncio.Event()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            account_id = uuid.UUID(payload)
        except ValueError:
            return
        self._broadcaster.publish([account_id])

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
                await connection.add_listener(CHANNEL, self._on_notification)
                if attempt:
                    logger.info("balance listener reconnected")
                    # Changes committed while we were away were not heard: resync streams.
                    self._broadcaster.publish_all()
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


@contextlib.asynccontextmanager
async def balance_events(settings: Settings) -> AsyncIterator[BalanceBroadcaster]:
    """The process's broadcaster, fed by `LISTEN` (PostgreSQL) or in-process (SQLite)."""
    broadcaster = BalanceBroadcaster()
    if settings.is_sqlite:
        key = str(make_url(settings.database_url))
        _local.setdefault(key, set()).add(broadcaster)
        try:
            yield broadcaster
        finally:
            _local[key].discard(broadcaster)
        return
    listener = PostgresListener(settings.listen_url, broadcaster)
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
