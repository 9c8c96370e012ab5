"""Buying credits: package offers, purchase intents and what paid or refunded orders do.

A purchase intent is created in two short transactions around the Polar call (none is held
while Polar answers): the first reserves a `pending` intent (invisible to clients), the
second opens it with the checkout, or deletes it when Polar failed, so no half-made intent
is ever shown. Credits are granted only by a paid order (a verified webhook), exactly once
per Polar order: the account row is locked, the order's `purchase` entry looked for, and
the ledger's unique index on the order id backs that up.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import idempotency
from app.accounts import service as accounts
from app.accounts.models import Account
from app.config import Settings
from app.credits import alerts
from app.credits import service as credits
from app.db import utcnow
from app.errors import AppError, Conflict, NotFound, ServiceNotConfigured
from app.idempotency import IdempotentRequest, Replay
from app.payments import repository
from app.payments.models import PurchaseIntent
from app.payments.packages import PACKAGES, PACKAGES_BY_ID, CreditPackage, polar_product_id
from app.payments.polar import CheckoutSession, PaymentProviderError, create_checkout
from app.payments.schemas import PurchaseIntentRead

if TYPE_CHECKING:
    from polar.v2026_10 import PolarAsync

logger = logging.getLogger(__name__)


class FirstTimeOfferUnavailable(Conflict):
    code = "first_time_offer_unavailable"
    title = "The first-time offer is only for an account's first purchase"


class PurchaseInProgress(AppError):
    status = 409
    code = "purchase_in_progress"
    title = "A checkout for this offer is being created"


class PaymentsNotConfigured(ServiceNotConfigured):
    pass


@dataclass(frozen=True)
class Offer:
    package: CreditPackage
    available: bool
    unavailable_reason: str | None


@dataclass(frozen=True)
class Started:
    """A new `pending` intent: call Polar, then `open_checkout` or `discard_pending`."""

    intent: PurchaseIntent
    product_id: str


@dataclass(frozen=True)
class Existing:
    """The account's open first-time checkout, returned instead of a second one."""

    intent: PurchaseIntent


@dataclass(frozen=True)
class PolarOrder:
    """The parts of a Polar order that decide what it is worth in credits."""

    id: str
    status: str
    product_id: str | None
    checkout_id: str | None
    external_customer_id: str | None
    total_amount: int
    refunded_amount: int
    metadata: dict[str, Any] = field(default_factory=dict)


def package_for_product(settings: Settings, product_id: str | None) -> CreditPackage | None:
    if not product_id:
        return None
    for package in PACKAGES:
        if polar_product_id(settings, package) == product_id:
            return package
    return None


def payments_configured(settings: Settings) -> bool:
    return settings.polar_access_token is not None


async def list_offers(session: AsyncSession, settings: Settings, account: Account) -> list[Offer]:
    """Every package with whether this account can buy it now, and why not."""
    usable = accounts.is_usable(account)
    purchased = await credits.has_purchased(session, account.id)
    offers = []
    for package in PACKAGES:
        reason = None
        if not usable:
            reason = "subscription_inactive"
        elif package.first_purchase_only and purchased:
            reason = "first_time_offer_used"
        elif not payments_configured(settings) or polar_product_id(settings, package) is None:
            reason = "payments_not_configured"
        offers.append(Offer(package, reason is None, reason))
    return offers


async def start_purchase(
    session: AsyncSession,
    settings: Settings,
    account_id: uuid.UUID,
    package_id: str,
    *,
    success_url: str | None,
    now: datetime | None = None,
) -> Started | Existing:
    """Check that the account may buy the package and reserve a `pending` intent for it."""
    now = now or utcnow()
    account = await accounts.lock_account(session, account_id)
    accounts.ensure_usable(account)
    package = PACKAGES_BY_ID[package_id]
    product_id = polar_product_id(settings, package)
    if not payments_configured(settings) or product_id is None:
        raise PaymentsNotConfigured("Buying credits is not configured on this server.")
    if package.first_purchase_only:
        if await credits.has_purchased(session, account_id):
            raise FirstTimeOfferUnavailable(
                "This account has bought credits before; choose `refill` or `small`."
            )
        live = await repository.live_first_time_intent(session, account_id)
        if live is not None:
            if live.status == "open" and live.expires_at is not None and live.expires_at > now:
                return Existing(live)
            if live.status == "pending" and live.created_at > now - _pending_lifetime(settings):
                raise PurchaseInProgress(
                    "Another request is opening this checkout; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            # A checkout past its expiry, or a pending intent whose request died.
            live.status = "expired"
            await session.flush()
    intent = PurchaseIntent(
        id=uuid.uuid4(),
        account_id=account_id,
        package_id=package.id,
        credits=package.credits,
        price_cents=package.price_cents,
        currency=package.currency,
        status="pending",
        success_url=success_url,
        created_at=now,
        needs_review=False,
    )
    await repository.add_intent(session, intent)
    return Started(intent, product_id)


@dataclass(frozen=True)
class Purchase:
    """What `purchase` opened (`created`), or the account's open first-time checkout."""

    intent: PurchaseIntentRead
    created: bool


def intent_read(intent: PurchaseIntent) -> PurchaseIntentRead:
    return PurchaseIntentRead.model_validate(intent, from_attributes=True)


async def purchase(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    polar: "PolarAsync | None",
    account_id: uuid.UUID,
    package_id: str,
    *,
    success_url: str | None,
    request: IdempotentRequest,
) -> Purchase | Replay:
    """Open a Polar checkout for a package: three short transactions around the Polar call,
    none held while Polar answers, under the request's `Idempotency-Key` (when sent), or the
    stored answer of the key's first request."""
    # 1. Check the rules and reserve a pending intent.
    async with sessionmaker() as session, session.begin():
        claim = await idempotency.begin(session, request)
        if isinstance(claim, Replay):
            return claim
        started = await start_purchase(
            session, settings, account_id, package_id, success_url=success_url
        )
        if isinstance(started, Existing):
            existing = intent_read(started.intent)
            await idempotency.finish(session, claim, 200, existing.model_dump(mode="json"))
            return Purchase(existing, created=False)
    # 2. Ask Polar for the checkout, holding no transaction or connection.
    assert polar is not None  # start_purchase refuses when payments are not configured
    try:
        checkout = await create_checkout(
            polar,
            product_id=started.product_id,
            account_id=account_id,
            purchase_intent_id=started.intent.id,
            package_id=started.intent.package_id,
            success_url=success_url,
            timeout_seconds=settings.polar_timeout_seconds,
        )
    except PaymentProviderError:
        # 3a. Leave nothing half-made: no intent, and the key may be retried.
        async with sessionmaker() as session, session.begin():
            await discard_pending(session, started.intent.id)
            await idempotency.release(session, claim)
        raise
    # 3b. Show the intent with its checkout.
    async with sessionmaker() as session, session.begin():
        opened = intent_read(await open_checkout(session, started.intent.id, checkout))
        await idempotency.finish(session, claim, 201, opened.model_dump(mode="json"))
    return Purchase(opened, created=True)


def _pending_lifetime(settings: Settings) -> timedelta:
    """Longer than any Polar call may take: a pending intent older than this is abandoned."""
    return timedelta(seconds=settings.polar_timeout_seconds * 2 + 30)


async def open_checkout(
    session: AsyncSession, intent_id: uuid.UUID, checkout: CheckoutSession
) -> PurchaseIntent:
    """Attach Polar's checkout to the pending intent and show it to the client."""
    intent = await repository.lock_intent(session, intent_id)
    if intent is None:
        raise LookupError(f"purchase intent {intent_id} vanished")
    intent.polar_checkout_id = checkout.id
    intent.checkout_url = checkout.url
    intent.expires_at = checkout.expires_at
    if intent.status == "pending":  # a webhook may already have completed it
        intent.status = "open"
    await session.flush()
    return intent


async def discard_pending(session: AsyncSession, intent_id: uuid.UUID) -> None:
    """Forget an intent whose checkout could not be created."""
    intent = await repository.lock_intent(session, intent_id)
    if intent is not None and intent.status == "pending":
        await repository.delete_intent(session, intent)


async def get_intent(
    session: AsyncSession, account_id: uuid.UUID, intent_id: uuid.UUID
) -> PurchaseIntent:
    """The account's intent, or 404 (another account's, or one still being created)."""
    intent = await repository.get_intent(session, intent_id)
    if intent is None or intent.account_id != account_id or intent.status == "pending":
        raise NotFound("No such purchase intent.")
    return intent


async def intents_needing_review(
    session: AsyncSession, account_id: uuid.UUID
) -> list[PurchaseIntent]:
    return await repository.intents_needing_review(session, account_id)


# --- what Polar's events do ---


async def record_paid_order(session: AsyncSession, settings: Settings, order: PolarOrder) -> str:
    """Grant a paid order's package credits, exactly once per order. Returns the outcome."""
    intent = await _intent_of_order(session, order)
    package = package_for_product(settings, order.product_id)
    if package is None and intent is not None:
        package = PACKAGES_BY_ID.get(intent.package_id)
    if package is None:
        return "not_a_credit_package"  # e.g. the subscription's own order
    account_id = intent.account_id if intent is not None else _uuid(order.external_customer_id)
    if account_id is None or await _account_missing(session, account_id):
        logger.error(
            "paid Polar order for no known account: credit it by hand",
            extra={"polar_order_id": order.id, "external_customer_id": order.external_customer_id},
        )
        return "unknown_account"
    # One grant per order: racing deliveries of the same order queue on the account row
    # (locked before the intent, in the same order as purchases, so they never deadlock).
    await accounts.lock_account(session, account_id)
    if intent is not None:
        intent = await repository.lock_intent(session, intent.id)
    if await credits.entry_for_order(session, "purchase", order.id) is not None:
        if intent is not None:
            _complete(intent, order.id)
            await session.flush()
        return "already_granted"
    second_first_time = package.first_purchase_only and await credits.has_purchased(
        session, account_id
    )
    if intent is None:
        intent = await repository.add_intent(
            session, _intent_for_unknown_checkout(package, account_id, order)
        )
    try:
        async with session.begin_nested():
            await credits.grant(
                session,
                account_id,
                package.credits,
                type="purchase",
                description=f"Purchase: {package.name} ({package.credits:,} credits)",
                purchase_intent_id=intent.id,
                polar_order_id=order.id,
            )
    except IntegrityError:  # the unique index on the order: granted by a racing delivery
        return "already_granted"
    _complete(intent, order.id)
    await alerts.record_event(
        session,
        account_id,
        "purchase.completed",
        package_id=package.id,
        credits=package.credits,
        polar_order_id=order.id,
    )
    if second_first_time:
        # Paid money is never lost: credited all the same, and support decides.
        intent.needs_review = True
        intent.review_reason = "First-time offer paid after the account had already bought credits."
        logger.warning(
            "second first-time offer paid: credited and flagged for review",
            extra={
                "account_id_flagged": str(account_id),
                "purchase_intent_id": str(intent.id),
                "polar_order_id": order.id,
            },
        )
    await session.flush()
    return "granted"


async def record_refunded_order(
    session: AsyncSession, settings: Settings, order: PolarOrder
) -> str:
    """Take back a refunded order's credits in proportion to what was refunded, at most what
    is available. Polar reports the order's cumulative refund, so a second refund of the
    same order (a partial one, then the rest) takes back the difference; a refund level
    already answered, or a lower one arriving late, takes nothing.

    A refund that arrives before the order's `order.paid` (deliveries are not ordered)
    first grants the order, so a later `order.paid` cannot grant what was refunded."""
    granted = await record_paid_order(session, settings, order)
    if granted not in ("granted", "already_granted"):
        return granted
    purchase = await credits.entry_for_order(session, "purchase", order.id)
    assert purchase is not None
    intent = await repository.find_intent_by_order(session, order.id)
    if intent is not None:
        intent = await repository.lock_intent(session, intent.id)
    # Refunds of one order decide from the reversals already written: one at a time.
    await credits.lock_balance(session, purchase.account_id)
    full = (
        order.status == "refunded"
        or order.total_amount <= 0
        or (order.refunded_amount >= order.total_amount)
    )
    level = max(order.total_amount, 1) if full else order.refunded_amount
    if full and intent is not None and intent.status != "refunded":
        intent.status = "refunded"
        await session.flush()
    reversals = await credits.reversals_for_order(session, order.id)
    if any(r.refunded_cents is None for r in reversals):
        return "already_reversed"  # written under the one-reversal-per-order rule
    answered = max((r.refunded_cents or 0 for r in reversals), default=0)
    if level <= answered:  # this level, or a higher one, was answered already
        return "already_reversed" if reversals else "nothing_to_reverse"
    to_take = _refund_share(purchase.amount, level, order.total_amount) - _refund_share(
        purchase.amount, answered, order.total_amount
    )
    if to_take <= 0:
        return "nothing_to_reverse"
    try:
        async with session.begin_nested():
            entry = await credits.take(
                session,
                purchase.account_id,
                to_take,
                type="refund_reversal",
                description=f"Refund of Polar order {order.id}",
                at_most_available=True,
                polar_order_id=order.id,
                purchase_intent_id=purchase.purchase_intent_id,
                refunded_cents=level,
            )
    except IntegrityError:
        return "already_reversed"
    taken = -entry.amount if entry is not None else 0
    if taken:
        await alerts.record_event(
            session,
            purchase.account_id,
            "purchase.refunded",
            credits=taken,
            polar_order_id=order.id,
        )
    if taken < to_take:
        logger.warning(
            "refund took back less than the order's credits: the rest was already spent",
            extra={"polar_order_id": order.id, "to_take": to_take, "taken": taken},
        )
    return "reversed" if taken else "nothing_available"


def _refund_share(credits_bought: int, refunded_cents: int, total_cents: int) -> int:
    """The credits that `refunded_cents` of an order of `total_cents` stands for."""
    if total_cents <= 0 or refunded_cents >= total_cents:
        return credits_bought
    return credits_bought * refunded_cents // total_cents


async def record_checkout_expired(
    session: AsyncSession, checkout_id: str, metadata: dict[str, Any]
) -> str:
    intent = await repository.find_intent_by_checkout(session, checkout_id)
    intent_id = intent.id if intent is not None else _uuid(metadata.get("purchase_intent_id"))
    intent = await repository.lock_intent(session, intent_id) if intent_id else None
    if intent is None:
        return "unknown_checkout"
    if intent.status in ("pending", "open"):
        intent.status = "expired"
        await session.flush()
        return "expired"
    return "ignored"


async def _intent_of_order(session: AsyncSession, order: PolarOrder) -> PurchaseIntent | None:
    """The intent whose checkout this order paid: by our id in the order's metadata, by its
    checkout, or by an earlier delivery of the same order."""
    intent = await repository.find_intent_by_order(session, order.id)
    if intent is None:
        intent_id = _uuid(order.metadata.get("purchase_intent_id"))
        if intent_id is not None:
            intent = await repository.get_intent(session, intent_id)
    if intent is None and order.checkout_id:
        intent = await repository.find_intent_by_checkout(session, order.checkout_id)
    if intent is not None and intent.polar_order_id not in (None, order.id):
        return None  # that checkout was paid by another order; this one stands alone
    return intent


def _intent_for_unknown_checkout(
    package: CreditPackage, account_id: uuid.UUID, order: PolarOrder
) -> PurchaseIntent:
    """A paid order without an intent of ours (a checkout made elsewhere): recorded as a
    completed intent so every purchase has one."""
    return PurchaseIntent(
        id=uuid.uuid4(),
        account_id=account_id,
        package_id=package.id,
        credits=package.credits,
        price_cents=package.price_cents,
        currency=package.currency,
        status="completed",
        created_at=utcnow(),
        needs_review=False,
    )


def _complete(intent: PurchaseIntent, order_id: str) -> None:
    if intent.status in ("pending", "open", "expired"):
        intent.status = "completed"
    intent.polar_order_id = order_id
    intent.completed_at = intent.completed_at or utcnow()


async def _account_missing(session: AsyncSession, account_id: uuid.UUID) -> bool:
    return await session.get(Account, account_id) is None


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
