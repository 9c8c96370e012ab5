"""The plugin's sign-in, Framer's polling pattern (framer/plugin-oauth): the plugin opens a
session and gets a read key, shows the dashboard's approval page (`authorize_url`, which
never carries the read key), and polls with the read key until the dashboard, after its
own sign-in, approves the session for an account. The one poll that finds it approved gets
a new API key of that account; every later poll gets `410`.

Statuses (one place): `pending` -> `approved` (the dashboard) -> `claimed` (a poll took the
key). A session lives `PLUGIN_SESSION_TTL_SECONDS` (10 minutes) from its creation; after
that it is expired whatever its status, unless its key was already handed out.

Exactly once: the claiming poll moves `approved` -> `claimed` with a conditional `UPDATE`
in the transaction that makes the key, so of two concurrent polls one claims and the other
finds nothing to claim (PostgreSQL re-checks the condition once the first commits; SQLite
serializes writers). Read keys are stored as SHA-256 and compared in constant time."""

import enum
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import PluginSession
from app.accounts.service import NewApiKey
from app.db import utcnow
from app.errors import AppError, Conflict, NotFound, ServiceNotConfigured

READ_KEY_PREFIX = "rfr_"


class PluginSessionStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CLAIMED = "claimed"


class PluginSignInNotConfigured(ServiceNotConfigured):
    pass


class PluginSessionGone(AppError):
    status = 410
    code = "plugin_session_gone"
    title = "This sign-in session has expired or was already used"


class PluginSessionApprovedElsewhere(Conflict):
    code = "plugin_session_already_approved"
    title = "This sign-in session was approved for another account"


@dataclass(frozen=True)
class NewPluginSession:
    record: PluginSession
    read_key: str


@dataclass(frozen=True)
class Poll:
    status: PluginSessionStatus
    api_key: NewApiKey | None = None


def _hash(read_key: str) -> str:
    return hashlib.sha256(read_key.encode()).hexdigest()


def authorize_url(base: str, session_id: uuid.UUID) -> str:
    """`base` with `session=<id>` added to its query."""
    parts = urlsplit(base)
    query = "&".join(filter(None, [parts.query, urlencode({"session": str(session_id)})]))
    return urlunsplit(parts._replace(query=query))


def _expired(record: PluginSession, now: datetime) -> bool:
    return record.expires_at <= now


async def create(session: AsyncSession, *, ttl: timedelta) -> NewPluginSession:
    now = utcnow()
    read_key = f"{READ_KEY_PREFIX}{secrets.token_urlsafe(32)}"
    record = PluginSession(
        id=uuid.uuid4(),
        read_key_hash=_hash(read_key),
        status=PluginSessionStatus.PENDING.value,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(record)
    await session.flush()
    return NewPluginSession(record, read_key)


async def _lock(session: AsyncSession, session_id: uuid.UUID) -> PluginSession | None:
    statement = (
        select(PluginSession)
        .where(PluginSession.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def approve(session: AsyncSession, session_id: uuid.UUID, account_id: uuid.UUID) -> None:
    """The dashboard approves the session for the account it signed in (again: no-op)."""
    record = await _lock(session, session_id)
    if record is None:
        raise NotFound("No such plugin session.")
    await accounts.get_account(session, account_id)  # 404 for an unknown account
    now = utcnow()
    if record.status == PluginSessionStatus.CLAIMED or _expired(record, now):
        raise PluginSessionGone("Start the sign-in again from the plugin.")
    if record.status == PluginSessionStatus.APPROVED:
        if record.account_id != account_id:
            raise PluginSessionApprovedElsewhere("It was approved for another account.")
        return
    record.status = PluginSessionStatus.APPROVED.value
    record.account_id = account_id
    record.approved_at = now
    await session.flush()


async def poll(session: AsyncSession, session_id: uuid.UUID, read_key: str) -> Poll:
    """`pending`, or `approved` with a new API key exactly once; `PluginSessionGone` after
    that or once expired; `NotFound` for an unknown session or a wrong read key."""
    record = await session.get(PluginSession, session_id, populate_existing=True)
    if record is None or not hmac.compare_digest(record.read_key_hash, _hash(read_key)):
        raise NotFound("No such plugin session.")
    now = utcnow()
    if record.status == PluginSessionStatus.CLAIMED or _expired(record, now):
        raise PluginSessionGone("Start the sign-in again.")
    if record.status == PluginSessionStatus.PENDING:
        return Poll(PluginSessionStatus.PENDING)
    claimed = await session.execute(
        update(PluginSession)
        .where(
            PluginSession.id == session_id,
            PluginSession.status == PluginSessionStatus.APPROVED.value,
            PluginSession.expires_at > now,
        )
        .values(status=PluginSessionStatus.CLAIMED.value, claimed_at=now)
        .returning(PluginSession.account_id)
        .execution_options(synchronize_session=False)
    )
    account_id = claimed.scalar_one_or_none()
    if account_id is None:  # a concurrent poll took the key
        raise PluginSessionGone("The API key was handed out already.")
    key = await accounts.create_api_key(session, account_id)
    await session.execute(
        update(PluginSession)
        .where(PluginSession.id == session_id)
        .values(api_key_id=key.record.id)
        .execution_options(synchronize_session=False)
    )
    return Poll(PluginSessionStatus.APPROVED, key)


async def prune(session: AsyncSession, *, older_than: timedelta) -> int:
    """Delete sessions expired for longer than `older_than`."""
    result = await session.execute(
        delete(PluginSession)
        .where(PluginSession.expires_at < utcnow() - older_than)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
