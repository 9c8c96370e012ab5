"""Engine, session factory, the declarative base and the unit-of-work dependency.

Writes are serialized per account: on PostgreSQL by row locks (conditional `UPDATE` or
`SELECT ... FOR UPDATE`), on SQLite by starting every transaction with `BEGIN IMMEDIATE`,
which takes the database's single write lock up front.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An auto-incrementing 64-bit key on PostgreSQL; SQLite only auto-increments `INTEGER`.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url, connect_args={"timeout": 30}, pool_pre_ping=False
        )
        _serialize_sqlite_writes(engine)
        return engine
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=settings.db_pool_pre_ping,
        connect_args={"timeout": 10, **pooler_connect_args(settings)},
    )
    _replace_closed_connections(engine)
    return engine


def pooler_connect_args(settings: Settings) -> dict[str, Any]:
    """SQLAlchemy's asyncpg dialect behind a transaction-mode pooler (PgBouncer): a server
    connection serves many clients, so no statement may be cached across transactions
    (asyncpg's cache and the dialect's), and the dialect's own named statements get names
    no other client can repeat (SQLAlchemy, "Prepared Statement Name with PGBouncer")."""
    if not settings.db_transaction_pooling:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def _replace_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection whose socket the server closed (a restart, an idle timeout) is
    swapped for a new one at checkout. Free, unlike a ping: asyncpg notices the close."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")


ACQUIRE_TIMEOUT_SECONDS = 30.0
"""Longest wait for a driver connection (SQLAlchemy's pool waits as long); then 503."""


class Record(asyncpg.Record):
    """Driver rows with attribute access too (`row.available`), like SQLAlchemy's rows, so
    code that reads a row does not care which path fetched it."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


async def create_statement_runner(settings: Settings) -> "StatementRunner | None":
    """PostgreSQL only: the asyncpg driver for the hottest statements (the badge,
    authentication, a generation's reserve and charge), each atomic on its own or in a
    short transaction. SQLAlchemy's execution layer costs more than these statements do
    (docs/benchmarks.md).

    Connections go back to the pool without asyncpg's reset round trip: nothing run on them
    leaves session state behind (no SET, no LISTEN; asyncpg still rolls back a transaction
    left open)."""
    if settings.is_sqlite:
        return None
    url = make_url(settings.database_url).set(drivername="postgresql")
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=0,  # connect on first use: the app starts without a database
        # Up to half kept by the runner for single statements, the rest for transactions.
        max_size=2 * settings.db_pool_size,
        timeout=10,
        reset=_keep_session,
        record_class=Record,
        # Behind a transaction-mode pooler: unnamed statements, parsed in the same message
        # group as their execution (asyncpg's documented PgBouncer setting).
        **({"statement_cache_size": 0} if settings.db_transaction_pooling else {}),
    )
    return StatementRunner(pool, keep=settings.db_pool_size)


class StatementRunner:
    """The driver pool, with single statements (each atomic on its own) on connections kept
    out of it: the badge and authentication run on every request, and asyncpg's acquire and
    release (timeouts, shields, queue bookkeeping) cost about a fifth of such a request
    (docs/benchmarks.md). Up to `keep` connections are leased from the pool for good; when
    all are busy the statement runs on the pool as usual. A connection whose statement
    failed or was cancelled, or that the server closed while it was kept, goes back to the
    pool, which resets or replaces it."""

    def __init__(self, pool: asyncpg.Pool, keep: int) -> None:
        self.pool = pool
        self._keep = keep
        self._kept = 0
        self._idle: list[asyncpg.Connection] = []

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchrow", sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Every row of one statement."""
        return await self._run("fetch", sql, args)  # type: ignore[no-any-return]

    async def warm_up(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Lease the kept connections now instead of on first use, and run each of
        `statements` once on every one of them (asyncpg prepares a statement once per
        connection, on its first run): the first requests and the first batch after a
        start pay neither a connection nor a prepare. Each statement comes with arguments
        that match no row, so running it changes nothing."""
        for sql, args in statements:
            # Side by side: each call takes a different kept connection (or leases one).
            await asyncio.gather(*(self.fetch(sql, *args) for _ in range(self._keep)))

    async def _run(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        while self._idle and _lost(self._idle[-1]):
            # The server closed it (a restart, an idle timeout): the pool replaces it at
            # its next acquire, as it does for its own connections.
            self._kept -= 1
            await _give_back(self.pool, self._idle.pop())
        if self._idle:
            connection = self._idle.pop()
        elif self._kept < self._keep:
            self._kept += 1
            try:
                connection = await self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS)
            except BaseException:
                self._kept -= 1
                raise
        else:
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as pooled:
                return await getattr(pooled, method)(sql, *args)
        try:
            row = await getattr(connection, method)(sql, *args)
        except BaseException:
            self._kept -= 1
            await _give_back(self.pool, connection)
            raise
        self._idle.append(connection)
        return row

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection in a transaction: committed at the end of the block, rolled
        back if it raises."""
        async with (
            self.pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection,
            connection.transaction(),
        ):
            yield connection

    async def close(self) -> None:
        """Give the kept connections back and close the pool."""
        idle, self._idle = self._idle, []
        self._kept -= len(idle)
        for connection in idle:
            await self.pool.release(connection)
        await self.pool.close()


def _lost(connection: asyncpg.Connection) -> bool:
    """Closed by the server; asyncpg then hands a pool connection back to its pool itself,
    and the kept proxy answers nothing at all any more."""
    try:
        return connection.is_closed()
    except asyncpg.InterfaceError:
        return True


async def _give_back(pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # already back (see `_lost`)
        await pool.release(connection)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's release hook: a no-op (see `create_statement_runner`)."""


def _serialize_sqlite_writes(engine: AsyncEngine) -> None:
    """Take SQLite's write lock at `BEGIN` so read-modify-write transactions never interleave."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The unit of work of one request: committed when the endpoint returns, else rolled back."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session, session.begin():
        yield session


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """For endpoints that run several short transactions of their own (generations)."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


# `scope="function"` commits before the response is sent, so a 2xx means committed.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
SessionMaker = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]


def dialect_insert(session: AsyncSession) -> Any:
    """`insert` with `on_conflict_do_nothing()` for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
