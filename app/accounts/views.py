"""Read models of accounts, subscriptions and API keys, shared by the accounts routers and
the admin account view (`app.flows`)."""

from app.accounts import service
from app.accounts.models import Account, ApiKey
from app.accounts.schemas import AccountRead, ApiKeyCreated, ApiKeyRead, SubscriptionRead
from app.accounts.service import NewApiKey
from app.db import utcnow


def subscription_read(account: Account) -> SubscriptionRead:
    return SubscriptionRead(
        status=account.subscription_status,  # type: ignore[arg-type]
        usable=service.is_usable(account, utcnow()),
        trial_ends_at=account.trial_ends_at,
        current_period_end=account.current_period_end,
        cancel_at_period_end=account.cancel_at_period_end,
    )


def account_read(account: Account) -> AccountRead:
    return AccountRead(
        id=account.id,
        email=account.email,
        created_at=account.created_at,
        trial_ends_at=account.trial_ends_at,
        subscription=subscription_read(account),
    )


def api_key_created(key: NewApiKey) -> ApiKeyCreated:
    return ApiKeyCreated(
        id=key.record.id, key=key.secret, prefix=key.prefix, created_at=key.record.created_at
    )


def api_key_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        prefix=f"{service.API_KEY_PREFIX}{key.lookup_id}",
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )
