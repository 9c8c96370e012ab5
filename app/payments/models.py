import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntPK, UTCDateTime, utcnow

INTENT_STATUSES = ("pending", "open", "completed", "expired", "refunded")
"""`pending` is internal: the Polar checkout is being created and the intent is not yet
visible to the client. The others are the contract's."""

LIVE_FIRST_TIME = "package_id = 'first_time' AND status IN ('pending', 'open')"


class PurchaseIntent(Base):
    """An account's wish to buy one credit package, carried out through a Polar checkout."""

    __tablename__ = "purchase_intent"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'open', 'completed', 'expired', 'refunded')",
            name="status_known",
        ),
        CheckConstraint("credits > 0", name="credits_positive"),
        CheckConstraint("price_cents >= 0", name="price_non_negative"),
        # At most one first-time checkout in flight per account: a second request gets the
        # open one back instead of a second checkout.
        Index(
            "uq_purchase_intent_live_first_time",
            "account_id",
            unique=True,
            postgresql_where=text(LIVE_FIRST_TIME),
            sqlite_where=text(LIVE_FIRST_TIME),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id"), index=True)
    package_id: Mapped[str] = mapped_column(String(32))
    credits: Mapped[int] = mapped_column(BigInteger)
    """Credits the package grants when its order is paid."""
    price_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    success_url: Mapped[str | None] = mapped_column(Text, default=None)
    polar_checkout_id: Mapped[str | None] = mapped_column(String(100), unique=True, default=None)
    checkout_url: Mapped[str | None] = mapped_column(Text, default=None)
    polar_order_id: Mapped[str | None] = mapped_column(String(100), unique=True, default=None)
    """The paid order that completed this intent."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """When the Polar checkout stops accepting payment."""
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    """Credited, but against the rules (a second paid first-time offer): support decides."""
    review_reason: Mapped[str | None] = mapped_column(Text, default=None)


class WebhookEvent(Base):
    """The inbox: one row per accepted Polar delivery (`webhook-id`), handled exactly once
    in the same transaction that inserted it."""

    __tablename__ = "webhook_event"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(255), unique=True)
    """The Standard Webhooks `webhook-id`: the same for every retry of one delivery."""
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[Any] = mapped_column(JSON)
    webhook_timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    outcome: Mapped[str | None] = mapped_column(String(40), default=None)
    """What handling did: `granted`, `already_granted`, `reversed`, `ignored`, ..."""
    detail: Mapped[str | None] = mapped_column(Text, default=None)
