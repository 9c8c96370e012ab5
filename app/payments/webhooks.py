"""Polar webhooks: Standard Webhooks verification, the inbox, and dispatch by event type.

Verification is polar-sdk's own (`polar.webhooks.validate_event`): it checks the
`webhook-id`, `webhook-timestamp` (5 minutes either way) and `webhook-signature` headers
against both keys Polar may sign with: the UTF-8 bytes of the whole `whsec_...` secret
(older endpoints) and the base64-decoded part after `whsec_` (plain Standard Webhooks).
The payload is then read leniently here, so an event type or field this service does not
know is acknowledged instead of refused.
"""

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.accounts import service as accounts
from app.accounts.service import SubscriptionChange
from app.config import Settings
from app.credits import service as credits
from app.db import utcnow
from app.errors import AppError, is_database_unavailable
from app.payments import repository, service
from app.payments.service import PolarOrder

logger = logging.getLogger(__name__)

WEBHOOK_ID_MAX_LENGTH = 255
EVENT_TYPE_MAX_LENGTH = 100
POLAR_ID_MAX_LENGTH = 100
"""The columns Polar's order, checkout and subscription ids are stored in."""
MAX_BIGINT = 2**63 - 1
SUBSCRIPTION_EVENTS = frozenset(
    {
        "subscription.created",
        "subscription.active",
        "subscription.updated",
        "subscription.canceled",
        "subscription.uncanceled",
        "subscription.revoked",
        "subscription.past_due",
    }
)
HANDLED_EVENTS = frozenset(
    {"order.paid", "order.refunded", "checkout.updated", "checkout.expired"} | SUBSCRIPTION_EVENTS
)


class _Unreadable(ValueError):
    """A signed payload without the fields its type must have."""


class InvalidSignature(AppError):
    status = 403
    code = "invalid_signature"
    title = "The webhook signature is missing, invalid or stale"


class InvalidWebhookPayload(AppError):
    status = 400
    code = "invalid_payload"
    title = "The webhook payload is not a JSON object"


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature checked out."""

    webhook_id: str
    timestamp: datetime
    event_type: str
    payload: dict[str, Any]
    unstorable: str | None = None
    """Why the delivery had to be sanitized to be stored (NUL characters, an over-long
    type): it is kept as `invalid_payload` and never acted on."""


def verify(body: bytes, headers: Mapping[str, str], secret: str | None) -> Delivery:
    """Check the signature; `InvalidSignature` unless it is Polar's and fresh."""
    from polar.webhooks import (  # imported at startup by `polar_client` when configured
        PolarWebhookError,
        PolarWebhookUnknownTypeError,
        PolarWebhookVerificationError,
        validate_event,
    )

    if not secret:
        raise InvalidSignature("Webhooks are disabled: POLAR_WEBHOOK_SECRET is not set.")
    plain_headers = {key.lower(): value for key, value in headers.items()}
    try:
        payload = validate_event(
            body, plain_headers, secret, HANDLED_EVENTS, payload_loader=lambda data: data
        )
    except PolarWebhookVerificationError as exc:
        raise InvalidSignature(f"Signature check failed: {exc.message}.") from exc
    except PolarWebhookUnknownTypeError:
        # Signed and fresh, of a type this service does not act on (or without one).
        payload = _json_object(body)
    except PolarWebhookError as exc:
        raise InvalidWebhookPayload("The signed body is not valid JSON.") from exc
    if not isinstance(payload, dict):
        raise InvalidWebhookPayload()
    webhook_id = plain_headers["webhook-id"]
    if len(webhook_id) > WEBHOOK_ID_MAX_LENGTH:
        raise InvalidWebhookPayload("`webhook-id` is too long.")
    clean, changed = _without_nul(payload)
    event_type = clean.get("type")
    if not isinstance(event_type, str) or not event_type:
        event_type = "unknown"
    unstorable = "NUL characters (removed to store it)" if changed else None
    if len(event_type) > EVENT_TYPE_MAX_LENGTH:
        event_type = event_type[:EVENT_TYPE_MAX_LENGTH]
        unstorable = unstorable or f"`type` longer than {EVENT_TYPE_MAX_LENGTH} characters"
    return Delivery(
        webhook_id=webhook_id,
        timestamp=datetime.fromtimestamp(int(float(plain_headers["webhook-timestamp"])), UTC),
        event_type=event_type,
        payload=clean,
        unstorable=unstorable,
    )


def _without_nul(value: Any) -> tuple[Any, bool]:
    """`value` with NUL characters removed from every string (PostgreSQL's text cannot
    hold them), and whether there were any."""
    if isinstance(value, str):
        return (value.replace("\x00", ""), True) if "\x00" in value else (value, False)
    if isinstance(value, dict):
        changed = False
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            clean_key, key_changed = _without_nul(key)
            clean_item, item_changed = _without_nul(item)
            cleaned[clean_key] = clean_item
            changed = changed or key_changed or item_changed
        return cleaned, changed
    if isinstance(value, list):
        pairs = [_without_nul(item) for item in value]
        return [item for item, _ in pairs], any(changed for _, changed in pairs)
    return value, False


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidWebhookPayload("The signed body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidWebhookPayload()
    return data


async def receive(session: AsyncSession, settings: Settings, delivery: Delivery) -> bool:
    """Store the delivery in the inbox and handle it, in the caller's one transaction, so a
    crash can neither lose it nor handle it twice. Returns False for a duplicate."""
    event_id = await repository.insert_webhook_event(
        session,
        webhook_id=delivery.webhook_id,
        event_type=delivery.event_type,
        payload=delivery.payload,
        webhook_timestamp=delivery.timestamp,
    )
    if event_id is None:
        metrics.WEBHOOKS.labels(delivery.event_type, "duplicate").inc()
        return False
    outcome, detail = await _handle(session, settings, delivery)
    if outcome == "invalid_payload":
        # Signed by Polar but not something we can act on: kept for a person, and
        # acknowledged so that Polar does not retry it forever.
        logger.error(
            "Polar webhook payload not understood",
            extra={
                "webhook_id": delivery.webhook_id,
                "event_type": delivery.event_type,
                "detail": detail,
            },
        )
    event = await repository.get_webhook_event(session, event_id)
    assert event is not None
    event.outcome = outcome
    event.detail = detail
    event.processed_at = utcnow()
    await session.flush()
    metrics.WEBHOOKS.labels(delivery.event_type, outcome).inc()
    logger.info(
        "Polar webhook handled",
        extra={
            "webhook_id": delivery.webhook_id,
            "event_type": delivery.event_type,
            "outcome": outcome,
        },
    )
    return True


async def _handle(
    session: AsyncSession, settings: Settings, delivery: Delivery
) -> tuple[str, str | None]:
    """The delivery's outcome and detail. Its effects run in a savepoint: a value the
    database refuses (too long, out of range, a broken constraint) undoes them and leaves
    the inbox row, as `invalid_payload`. A database that is down is not the payload's
    fault: that raises (503), and Polar retries."""
    if delivery.unstorable is not None:
        return "invalid_payload", f"Not acted on: {delivery.unstorable}."
    try:
        async with session.begin_nested():
            return await _dispatch(session, settings, delivery), None
    except (ValidationError, _Unreadable) as exc:
        return "invalid_payload", str(exc)[:2000]
    except (StatementError, OverflowError) as exc:
        if is_database_unavailable(exc):
            raise
        cause = getattr(exc, "orig", None) or exc
        return "invalid_payload", f"Refused by the database: {type(cause).__name__}."


async def _dispatch(session: AsyncSession, settings: Settings, delivery: Delivery) -> str:
    event_type = delivery.event_type
    data = delivery.payload.get("data")
    if event_type not in HANDLED_EVENTS:
        return "ignored"
    if not isinstance(data, dict):
        raise _Unreadable("`data` is not an object")
    if event_type == "order.paid":
        return await service.record_paid_order(session, settings, _order(data))
    if event_type == "order.refunded":
        return await service.record_refunded_order(session, settings, _order(data))
    if event_type in ("checkout.updated", "checkout.expired"):
        checkout = _Checkout.model_validate(data)
        if event_type == "checkout.updated" and checkout.status != "expired":
            return "ignored"
        return await service.record_checkout_expired(session, checkout.id, checkout.metadata)
    subscription = _Subscription.model_validate(data)
    return await _record_subscription(session, delivery, event_type, subscription)


# --- lenient views of Polar's payloads: only what we use, extra fields ignored ---


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


PolarId = Annotated[str, StringConstraints(min_length=1, max_length=POLAR_ID_MAX_LENGTH)]
Cents = Annotated[int, Field(ge=0, le=MAX_BIGINT)]


class _Customer(_Lenient):
    id: str | None = None
    external_id: str | None = None


class _Order(_Lenient):
    id: PolarId
    status: str = "paid"
    product_id: PolarId | None = None
    checkout_id: PolarId | None = None
    customer: _Customer | None = None
    total_amount: Cents = 0
    refunded_amount: Cents = 0
    metadata: dict[str, Any] = {}


class _Checkout(_Lenient):
    id: PolarId
    status: str
    metadata: dict[str, Any] = {}


class _Subscription(_Lenient):
    id: PolarId
    status: str
    created_at: datetime | None = None
    modified_at: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    trial_end: datetime | None = None
    customer: _Customer | None = None
    metadata: dict[str, Any] = {}


def _order(data: dict[str, Any]) -> PolarOrder:
    order = _Order.model_validate(data)
    return PolarOrder(
        id=order.id,
        status=order.status,
        product_id=order.product_id,
        checkout_id=order.checkout_id,
        external_customer_id=order.customer.external_id if order.customer else None,
        total_amount=order.total_amount,
        refunded_amount=order.refunded_amount,
        metadata=order.metadata,
    )


def subscription_status(
    event_type: str, polar_status: str, cancel_at_period_end: bool
) -> str | None:
    """Polar's subscription status in the contract's terms (None: leave ours as it is).

    Polar keeps a subscription `active` with `cancel_at_period_end` until the period ends,
    then makes it `canceled` and sends `subscription.revoked`: for us that is `canceled`
    (usable until the period ends) and then `expired` (frozen)."""
    if event_type == "subscription.revoked":
        return "expired"
    if polar_status in ("active", "trialing"):
        if cancel_at_period_end:
            return "canceled"
        return "active" if polar_status == "active" else "trialing"
    if polar_status == "past_due":
        return "past_due"
    if polar_status in ("canceled", "unpaid", "incomplete_expired", "paused"):
        return "expired"
    return None  # `incomplete`: the first payment has not happened yet


async def _record_subscription(
    session: AsyncSession, delivery: Delivery, event_type: str, subscription: _Subscription
) -> str:
    account_id = await _subscription_account(session, subscription)
    if account_id is None:
        logger.error(
            "Polar subscription event for no known account",
            extra={"polar_subscription_id": subscription.id, "event_type": event_type},
        )
        return "unknown_account"
    observed_at = subscription.modified_at or subscription.created_at or delivery.timestamp
    if observed_at.tzinfo is None:
        observed_at = observed_at.replace(tzinfo=UTC)
    status = subscription_status(event_type, subscription.status, subscription.cancel_at_period_end)
    change = SubscriptionChange(
        observed_at=observed_at.astimezone(UTC),
        polar_subscription_id=subscription.id,
        status=status,
        current_period_end=_utc(subscription.current_period_end),
        cancel_at_period_end=subscription.cancel_at_period_end,
        trial_ends_at=_utc(subscription.trial_end) if status == "trialing" else None,
    )
    changed = await accounts.apply_subscription_change(session, account_id, change)
    if changed:
        # `usable` is part of the balance badge: live clients should hear about it.
        credits.mark_balance_changed(session, account_id)
    return "subscription_updated" if changed else "stale_subscription_state"


async def _subscription_account(
    session: AsyncSession, subscription: _Subscription
) -> uuid.UUID | None:
    for candidate in (
        subscription.customer.external_id if subscription.customer else None,
        subscription.metadata.get("account_id"),
    ):
        if isinstance(candidate, str):
            try:
                account_id = uuid.UUID(candidate)
            except ValueError:
                continue
            if await accounts.account_exists(session, account_id):
                return account_id
    known = await accounts.find_account_by_subscription(session, subscription.id)
    return known.id if known is not None else None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
