"""Work that spans domains, above them all (Dispatch's `flows.py`): the domains import one
way (`accounts` < `credits` < {`generation`, `payments`}), so what needs a higher domain's
help lives here, and the routers that serve it call it.

- a new account gets its credit balance (`credits`) with it;
- the first site an account ever connects grants the starter credits (`credits`);
- the admin account view shows the balance (`credits`) and the purchases needing review
  (`payments`);
- the estimate recommends a package (`payments`) knowing whether the account has bought
  before (`credits`).

Every function here runs inside its caller's unit of work: it flushes, never commits.
"""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import Account, Site
from app.accounts.schemas import AccountRead, ApiKeyRead
from app.accounts.service import NewApiKey
from app.accounts.views import account_read, api_key_read
from app.credits import service as credits
from app.credits.schemas import BalanceRead, EstimateCredits, EstimateRead
from app.credits.views import balance_snapshot
from app.payments import packages
from app.payments import service as payments
from app.payments.schemas import PurchaseReviewRead

STARTER_GRANT_DESCRIPTION = "Starter credits for connecting your first site"


async def create_account(
    session: AsyncSession, email: str, *, trial_days: int, low_balance_threshold: int | None = None
) -> tuple[Account, NewApiKey]:
    """An account (its trial starting now), its empty credit balance and its first API key."""
    account = await accounts.add_account(session, email, trial_days=trial_days)
    await credits.open_account(session, account.id, low_balance_threshold=low_balance_threshold)
    key = await accounts.create_api_key(session, account.id)
    return account, key


async def connect_site(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    framer_project_id: str,
    name: str,
    starter_credits: int,
) -> tuple[Site, bool]:
    """Connect a Framer project (or return the live site already connected for it), and
    whether it was created.

    The first site an account ever connects grants the starter credits, once: the account
    row is locked (`accounts.connect_site`), so racing connects queue up, and the ledger's
    unique index on the account's starter grant backs that up."""
    connection = await accounts.connect_site(
        session, account_id, framer_project_id=framer_project_id, name=name
    )
    if connection.first and starter_credits > 0:
        await credits.grant(
            session,
            account_id,
            starter_credits,
            type="starter_grant",
            description=STARTER_GRANT_DESCRIPTION,
        )
    return connection.site, connection.created


class AdminAccountRead(AccountRead):
    """An account as support sees it."""

    balance: BalanceRead
    api_keys: list[ApiKeyRead]
    purchases_needing_review: list[PurchaseReviewRead]
    """Paid purchases credited against a rule (a second first-time offer): support decides."""


async def admin_account(session: AsyncSession, account_id: uuid.UUID) -> AdminAccountRead:
    """An account with its balance, subscription, API keys and the purchases support must
    look at; 404 for an unknown account."""
    account = await accounts.get_account(session, account_id)
    keys = await accounts.list_api_keys(session, account_id)
    return AdminAccountRead(
        **account_read(account).model_dump(),
        balance=await balance_snapshot(session, account),
        api_keys=[api_key_read(k) for k in keys],
        purchases_needing_review=[
            PurchaseReviewRead(
                purchase_intent_id=intent.id,
                package_id=intent.package_id,
                credits=intent.credits,
                price_cents=intent.price_cents,
                polar_order_id=intent.polar_order_id,
                completed_at=intent.completed_at,
                reason=intent.review_reason or "",
            )
            for intent in await payments.intents_needing_review(session, account_id)
        ],
    )


async def estimate(
    session: AsyncSession, account: Account, *, pages: int, images: int, schema: bool
) -> EstimateRead:
    """Credits for a full pass over a site (a meta title and description per page, alt text
    per image, optionally a schema per page: one credit each) and the package to buy."""
    schema_credits = pages if schema else 0
    total = pages * 2 + images + schema_credits
    first_time_available = not await credits.has_purchased(session, account.id)
    return EstimateRead(
        credits=EstimateCredits(
            meta_titles=pages,
            meta_descriptions=pages,
            alt_text=images,
            schema_=schema_credits,
            total=total,
        ),
        recommended_package=packages.recommend(total, first_time_available=first_time_available).id,
    )
