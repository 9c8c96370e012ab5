"""`Idempotency-Key` handling: one stored response per (scope, key), and the one guard every
idempotent endpoint goes through.

The record is inserted with `ON CONFLICT DO NOTHING` before the work is done: only the
request whose insert created the row does the work, in the same transaction or (for
generations and purchase intents, which call a provider between transactions) in a later
one. A repeat with the same key and request gets the stored response; with another
request, `409 idempotency_key_reused`; while the first is still working, `409
idempotent_request_in_progress` (or, for callers that wait, `InProgress`).

The guard, used by services (never by routers):

    request = idempotency.IdempotentRequest.of(scope, key, "POST", path, body)
    started = await idempotency.begin(session, request)   # None when no key was sent
    if isinstance(started, idempotency.Replay):
        return started.response()
    ...the work...
    await idempotency.finish(session, started, status_code, body)

`finish` with a `503` frees the key instead of storing the answer: a 503 is not final (the
provider or the database was unavailable, or the service was shutting down), so a retry
with the same key does the work anew. `release` frees it when the work failed before any
effect.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from fastapi.responses import JSONResponse
from sqlalchemy import JSON, Integer, String, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntPK, UTCDateTime, dialect_insert, utcnow
from app.errors import PROBLEM_JSON, AppError, IdempotencyKeyReused

IDEMPOTENCY_KEY_MAX_LENGTH = 255
REPLAYED_HEADER = "Idempotency-Replayed"
"""Set to `true` on every answer that is a stored one replayed (API.md, second release)."""


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_record_scope_key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(100))
    """Whose key it is: `account:<id>` or `admin`."""
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the method, path and canonical JSON body."""
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class IdempotentRequestInProgress(AppError):
    status = 409
    code = "idempotent_request_in_progress"
    title = "A request with this Idempotency-Key is still being processed"


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: Any

    @property
    def headers(self) -> dict[str, str]:
        return {REPLAYED_HEADER: "true"}

    def response(self) -> JSONResponse:
        """The stored answer as sent the first time, marked as replayed."""
        media_type = PROBLEM_JSON if self.status_code >= 400 else "application/json"
        return JSONResponse(
            self.body, status_code=self.status_code, headers=self.headers, media_type=media_type
        )


@dataclass(frozen=True)
class Claim:
    """This request owns the key and must do the work, then `complete` it."""

    record_id: int


@dataclass(frozen=True)
class InProgress:
    """Another request owns the key and has not finished yet."""

    record_id: int


ADMIN_SCOPE = "admin"
"""The scope of keys sent with the admin token."""


def account_scope(account_id: uuid.UUID) -> str:
    """The scope of keys sent by an account's API key or plugin session."""
    return f"account:{account_id}"


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(
    session: AsyncSession, scope: str, key: str, request_fingerprint: str
) -> Claim | Replay | InProgress:
    insert = dialect_insert(session)
    statement = (
        insert(IdempotencyRecord)
        .values(scope=scope, key=key, fingerprint=request_fingerprint, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(IdempotencyRecord.id)
    )
    created = (await session.execute(statement)).scalar_one_or_none()
    if created is not None:
        return Claim(created)
    return await lookup(session, scope, key, request_fingerprint)


async def lookup(
    session: AsyncSession, scope: str, key: str, request_fingerprint: str
) -> Replay | InProgress:
    record = (
        await session.execute(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was first used with a different request; "
            "use a new key for a new request."
        )
    if record.status_code is None:
        return InProgress(record.id)
    return Replay(record.status_code, record.response_body)


async def complete(session: AsyncSession, claimed: Claim, status_code: int, body: Any) -> None:
    record = await session.get(IdempotencyRecord, claimed.record_id)
    if record is None:
        raise LookupError(f"idempotency record {claimed.record_id} vanished")
    record.status_code = status_code
    record.response_body = body
    record.completed_at = utcnow()
    await session.flush()


async def abandon(session: AsyncSession, claimed: Claim) -> None:
    """Forget a claim whose work failed before any effect, so the key can be retried."""
    record = await session.get(IdempotencyRecord, claimed.record_id)
    if record is not None and record.status_code is None:
        await session.delete(record)
        await session.flush()


@dataclass(frozen=True)
class IdempotentRequest:
    """One request as the guard sees it: whose key, the key (or None), and the fingerprint
    of the request it was first sent with."""

    scope: str
    key: str | None
    fingerprint: str

    @classmethod
    def of(
        cls, scope: str, key: str | None, method: str, path: str, body: Any
    ) -> "IdempotentRequest":
        return cls(scope, key, fingerprint(method, path, body))


async def try_begin(
    session: AsyncSession, request: IdempotentRequest
) -> Claim | Replay | InProgress | None:
    """Claim the key for this request, or find its stored answer, or find it in progress.
    None when the request carries no key (the work runs unguarded)."""
    if request.key is None:
        return None
    return await claim(session, request.scope, request.key, request.fingerprint)


async def begin(session: AsyncSession, request: IdempotentRequest) -> Claim | Replay | None:
    """As `try_begin`, for callers that do not wait: a key still in progress is
    `409 idempotent_request_in_progress` with `Retry-After`."""
    started = await try_begin(session, request)
    if isinstance(started, InProgress):
        raise IdempotentRequestInProgress("Retry shortly.", headers={"Retry-After": "1"})
    return started


async def finish(session: AsyncSession, started: Claim | None, status_code: int, body: Any) -> None:
    """Store the answer for the key's replays; a 503 frees the key instead (not final)."""
    if started is None:
        return
    if status_code == 503:
        await abandon(session, started)
        return
    await complete(session, started, status_code, body)


async def release(session: AsyncSession, started: Claim | None) -> None:
    """Free the key: the work failed before any effect, so a retry may do it."""
    if started is not None:
        await abandon(session, started)


# --- the same records on the driver (asyncpg), for the single generation's fast path ---

_CLAIM_ON_DRIVER_SQL = """
INSERT INTO idempotency_record (scope, key, fingerprint, created_at)
VALUES ($1::text, $2::text, $3::text, $4::timestamptz)
ON CONFLICT (scope, key) DO NOTHING
RETURNING id
"""

_COMPLETE_ON_DRIVER_SQL = """
UPDATE idempotency_record
SET status_code = $2::int, response_body = $3::text::json, completed_at = $4::timestamptz
WHERE id = $1::bigint
"""


async def claim_on_driver(
    connection: asyncpg.Connection, request: IdempotentRequest, now: datetime
) -> Claim | None:
    """`claim` on an asyncpg connection in a transaction: the key's `Claim` when this
    request created its record, None when the key was used before (the ORM path then
    replays, waits or refuses, by `try_begin`). The request must carry a key."""
    if request.key is None:
        raise ValueError("claim_on_driver needs a request with a key")
    record_id = await connection.fetchval(
        _CLAIM_ON_DRIVER_SQL, request.scope, request.key, request.fingerprint, now
    )
    return None if record_id is None else Claim(record_id)


async def complete_on_driver(
    connection: asyncpg.Connection, claimed: Claim, status_code: int, body: Any, now: datetime
) -> None:
    """`complete` on an asyncpg connection (in the transaction of the work it answers)."""
    await connection.execute(
        _COMPLETE_ON_DRIVER_SQL, claimed.record_id, status_code, json.dumps(body), now
    )
