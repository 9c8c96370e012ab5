"""`Idempotency-Key` handling: one stored response per (scope, key).

The record is inserted with `ON CONFLICT DO NOTHING` before the work is done: only the
request whose insert created the row does the work, in the same transaction or (for
generations, which call a provider between transactions) in a later one. A repeat with the
same key and request gets the stored response; with another request, `409`.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
