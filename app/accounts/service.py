"""Accounts, API keys, sites and the subscription state that makes credits usable."""

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, ApiKey, Site
from app.db import StatementRunner, utcnow
from app.errors import AppError, Conflict, NotFound

API_KEY_PREFIX = "rfk_"
"""Every account key starts with this, so leaked keys are easy to recognise and scan for."""


class EmailTaken(Conflict):
    code = "email_taken"
    title = "An account with this email already exists"


class SubscriptionInactive(AppError):
    status = 403
    code = "subscription_inactive"
    title = "Subscription inactive"


@dataclass(frozen=True)
class NewApiKey:
    record: ApiKey
    secret: str

    @property
    def prefix(self) -> str:
        return f"{API_KEY_PREFIX}{self.record.lookup_id}"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class SubscriptionState(Protocol):
    subscription_status: str
    trial_ends_at: datetime
    current_period_end: datetime | None


def is_usable(account: SubscriptionState, now: datetime | None = None) -> bool:
    """Credits can be spent while trialing before the trial's end, while active, and after
    a cancellation or a failed renewal until the paid period ends. Otherwise frozen."""
    now = now or utcnow()
    status = account.subscription_status
    if status == "trialing":
        return now < account.trial_ends_at
    if status == "active":
        return True
    if status in ("canceled", "past_due"):
        return account.current_period_end is not None and now < account.current_period_end
    return False


def ensure_usable(account: Account) -> None:
    if not is_usable(account):
        raise SubscriptionInactive(
            "Your trial or subscription has ended, so your credits are frozen. "
            "Renew your subscription to use them again; your balance is kept."
        )


async def add_account(session: AsyncSession, email: str, *, trial_days: int) -> Account:
    """A new account, its trial starting now. Its credit balance and first API key come with
    it in `app.flows.create_account`."""
    email = email.strip().lower()
    taken = await session.execute(select(Account.id).where(Account.email == email))
    if taken.first() is not None:
        raise EmailTaken(f"{email} already has an account.")
    now = utcnow()
    account = Account(
        id=uuid.uuid4(),
        email=email,
        created_at=now,
        trial_ends_at=now + timedelta(days=trial_days),
        subscription_status="trialing",
        cancel_at_period_end=False,
    )
    session.add(account)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create with the same email won
        raise EmailTaken(f"{email} already has an account.") from exc
    return account


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("No such account.")
    return account


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    """Load the account with its row locked: serializes per-account state changes."""
    account = (
        await session.execute(
            select(Account)
            .where(Account.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if account is None:
        raise NotFound("No such account.")
    return account


async def create_api_key(session: AsyncSession, account_id: uuid.UUID) -> NewApiKey:
    lookup_id = secrets.token_hex(8)
    secret = f"{API_KEY_PREFIX}{lookup_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        id=uuid.uuid4(),
        account_id=account_id,
        lookup_id=lookup_id,
        secret_hash=hash_key(secret),
        created_at=utcnow(),
    )
    session.add(record)
    await session.flush()
    return NewApiKey(record, secret)


async def list_api_keys(session: AsyncSession, account_id: uuid.UUID) -> list[ApiKey]:
    statement = select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    return list((await session.execute(statement)).scalars())


KEYS_REVOKED_KEY = "rankframe.keys_revoked"
"""`session.info` key: lookup ids of the keys this transaction revoked. Once it commits,
every instance closes their open streams (`app.credits.events`)."""


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    session.info.setdefault(KEYS_REVOKED_KEY, set()).add(key.lookup_id)


async def revoked_lookup_ids(session: AsyncSession, lookup_ids: list[str]) -> set[str]:
    """Those of the keys (by lookup id) that are revoked."""
    if not lookup_ids:
        return set()
    rows = await session.execute(
        select(ApiKey.lookup_id).where(
            ApiKey.lookup_id.in_(lookup_ids), ApiKey.revoked_at.is_not(None)
        )
    )
    return set(rows.scalars())


def key_lookup_id(raw_key: str) -> str | None:
    """The public lookup part of an `rfk_<lookup>_<secret>` key, or None if malformed."""
    if not raw_key.startswith(API_KEY_PREFIX):
        return None
    lookup_id, _, rest = raw_key[len(API_KEY_PREFIX) :].partition("_")
    if not lookup_id or not rest or len(lookup_id) > 32:
        return None
    return lookup_id


def key_matches(raw_key: str, secret_hash: str, revoked_at: datetime | None) -> bool:
    """A live key whose hash matches; the comparison takes constant time."""
    return hmac.compare_digest(secret_hash, hash_key(raw_key)) and revoked_at is None


_KEY_AND_ACCOUNT = select(ApiKey.secret_hash, ApiKey.revoked_at, *Account.__table__.columns).join(
    Account, Account.id == ApiKey.account_id
)
AUTHENTICATE_SQL = str(
    _KEY_AND_ACCOUNT.where(ApiKey.lookup_id == bindparam("lookup_id")).compile(
        dialect=asyncpg_dialect()
    )
)
"""`authenticate`'s statement for the driver pool (PostgreSQL)."""
AUTHENTICATE_WARM_UP = (AUTHENTICATE_SQL, ("",))
"""It, with an argument that matches no row (no key's lookup id is empty)."""
_ACCOUNT_COLUMNS = tuple(column.key for column in Account.__table__.columns)


async def authenticate_on_driver(statements: StatementRunner, raw_key: str) -> Account | None:
    """`authenticate` as one statement on the driver's connections (PostgreSQL): the
    account, not attached to any session, or None."""
    lookup_id = key_lookup_id(raw_key)
    if lookup_id is None:
        return None
    row = await statements.fetchrow(AUTHENTICATE_SQL, lookup_id)
    if row is None or not key_matches(raw_key, row.secret_hash, row.revoked_at):
        return None
    return Account(**{name: row[name] for name in _ACCOUNT_COLUMNS})


async def authenticate(session: AsyncSession, raw_key: str) -> Account | None:
    """The account of a live key, or None."""
    lookup_id = key_lookup_id(raw_key)
    if lookup_id is None:
        return None
    row = (
        await session.execute(
            select(ApiKey.secret_hash, ApiKey.revoked_at, Account)
            .join(Account, Account.id == ApiKey.account_id)
            .where(ApiKey.lookup_id == lookup_id)
        )
    ).one_or_none()
    if row is None or not key_matches(raw_key, row.secret_hash, row.revoked_at):
        return None
    account: Account = row.Account
    return account


@dataclass(frozen=True)
class SiteConnection:
    site: Site
    created: bool
    """False: the project was already connected (the site is the existing one)."""
    first: bool
    """The account's first site ever: it earns the starter credits."""


async def connect_site(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    framer_project_id: str,
    name: str,
) -> SiteConnection:
    """Connect a Framer project (or return the live site already connected for it).

    The account row is locked, so racing connects queue up and exactly one of them is the
    account's first site ever (`app.flows.connect_site` grants the starter credits for it)."""
    account = await lock_account(session, account_id)
    existing = (
        await session.execute(
            select(Site).where(
                Site.account_id == account_id,
                Site.framer_project_id == framer_project_id,
                Site.deleted_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        return SiteConnection(existing, created=False, first=False)
    now = utcnow()
    site = Site(
        id=uuid.uuid4(),
        account_id=account_id,
        framer_project_id=framer_project_id,
        name=name,
        created_at=now,
    )
    session.add(site)
    first = account.first_site_connected_at is None
    if first:
        account.first_site_connected_at = now
    await session.flush()
    return SiteConnection(site, created=True, first=first)


async def list_sites(session: AsyncSession, account_id: uuid.UUID) -> list[Site]:
    statement = (
        select(Site)
        .where(Site.account_id == account_id, Site.deleted_at.is_(None))
        .order_by(Site.created_at, Site.id)
    )
    return list((await session.execute(statement)).scalars())


async def get_site(session: AsyncSession, account_id: uuid.UUID, site_id: uuid.UUID) -> Site:
    """The account's live site, or 404 (another account's site is just as missing)."""
    site = await session.get(Site, site_id)
    if site is None or site.account_id != account_id or site.deleted_at is not None:
        raise NotFound("No such site.")
    return site


async def remove_site(session: AsyncSession, account_id: uuid.UUID, site_id: uuid.UUID) -> None:
    site = await get_site(session, account_id, site_id)
    site.deleted_at = utcnow()
    await session.flush()


@dataclass(frozen=True)
class SubscriptionChange:
    """A subscription's state as the billing provider reported it at `observed_at`."""

    observed_at: datetime
    """The provider's modification time of this state; older states never win."""
    polar_subscription_id: str
    status: str | None
    """One of the contract's statuses, or None to keep the current one."""
    current_period_end: datetime | None
    cancel_at_period_end: bool
    trial_ends_at: datetime | None = None


async def apply_subscription_change(
    session: AsyncSession, account_id: uuid.UUID, change: SubscriptionChange
) -> bool:
    """Record the subscription's state unless a newer one was already recorded.

    Events arrive retried, duplicated and out of order, so the provider's own timestamp
    decides: a state observed before the one stored changes nothing. Lapsing freezes the
    balance (see `is_usable`), renewing unfreezes the same balance; nothing here touches
    credits. Returns whether anything changed (the caller tells the balance's live clients:
    `usable` is part of the badge)."""
    account = await lock_account(session, account_id)
    if (
        account.subscription_updated_at is not None
        and change.observed_at < account.subscription_updated_at
    ):
        return False
    if change.status is not None:
        account.subscription_status = change.status
    account.polar_subscription_id = change.polar_subscription_id
    account.current_period_end = change.current_period_end
    account.cancel_at_period_end = change.cancel_at_period_end
    if change.trial_ends_at is not None:
        account.trial_ends_at = change.trial_ends_at
    account.subscription_updated_at = change.observed_at
    await session.flush()
    return True


async def find_account_by_subscription(
    session: AsyncSession, polar_subscription_id: str
) -> Account | None:
    statement = select(Account).where(Account.polar_subscription_id == polar_subscription_id)
    return (await session.execute(statement.limit(1))).scalar_one_or_none()


async def account_exists(session: AsyncSession, account_id: uuid.UUID) -> bool:
    return await session.get(Account, account_id) is not None
