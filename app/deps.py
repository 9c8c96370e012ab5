"""Typed dependencies for what the app holds for its lifetime (`app.state`): routers and
dependencies ask for `AppSettings`, `ReadEngine`, `Broadcaster`, `PolarClient` ... and never
reach into `request.app.state` themselves.

`main.create_app` and its lifespan fill the state; each getter here reads one attribute.
The types of the heavier objects (the balance broadcaster, the Polar client, the rate
limiters) are imported for type checking only, so importing this module pulls in no
domain: the lowest domain (`accounts`) can use it.
"""

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import StatementRunner

if TYPE_CHECKING:
    from polar.v2026_10 import PolarAsync

    from app.credits.events import BalanceBroadcaster
    from app.limits import TokenBucketLimiter


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    """The engine of the unit-of-work sessions."""
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_read_engine(request: Request) -> AsyncEngine:
    """The engine of single-statement reads (autocommit unless behind a pooler)."""
    engine: AsyncEngine = request.app.state.read_engine
    return engine


async def get_read_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """Sessions on the read engine."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.read_sessionmaker
    return sessionmaker


async def get_statements(request: Request) -> StatementRunner | None:
    """The asyncpg statement runner (PostgreSQL), or None (SQLite)."""
    statements: StatementRunner | None = request.app.state.statements
    return statements


async def get_polar(request: Request) -> "PolarAsync | None":
    """The app's Polar client (None when `POLAR_ACCESS_TOKEN` is not set)."""
    client: PolarAsync | None = request.app.state.polar
    return client


async def get_rate_limiters(request: Request) -> "dict[str, TokenBucketLimiter | None]":
    """The in-process rate limiters by name (None: that limit is kept in the database)."""
    limiters: dict[str, TokenBucketLimiter | None] = request.app.state.rate_limiters
    return limiters


async def get_balance_broadcaster(request: Request) -> "BalanceBroadcaster":
    """The balance broadcaster feeding `/v1/balance/events`."""
    broadcaster: BalanceBroadcaster = request.app.state.balance_broadcaster
    return broadcaster


AppSettings = Annotated[Settings, Depends(get_app_settings)]
Engine = Annotated[AsyncEngine, Depends(get_engine)]
ReadEngine = Annotated[AsyncEngine, Depends(get_read_engine)]
ReadSessionMaker = Annotated[async_sessionmaker[AsyncSession], Depends(get_read_sessionmaker)]
Statements = Annotated[StatementRunner | None, Depends(get_statements)]
PolarClient = Annotated["PolarAsync | None", Depends(get_polar)]
RateLimiters = Annotated["dict[str, TokenBucketLimiter | None]", Depends(get_rate_limiters)]
Broadcaster = Annotated["BalanceBroadcaster", Depends(get_balance_broadcaster)]
