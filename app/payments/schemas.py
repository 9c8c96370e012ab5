import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PackageId = Literal["first_time", "refill", "small"]
IntentStatus = Literal["open", "completed", "expired", "refunded"]
UnavailableReason = Literal[
    "first_time_offer_used", "subscription_inactive", "payments_not_configured"
]


class CreditPackageRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "first_time",
                    "name": "First-time offer",
                    "credits": 30000,
                    "price_cents": 4900,
                    "currency": "usd",
                    "price_per_credit": "0.0016",
                    "available": True,
                    "unavailable_reason": None,
                }
            ]
        }
    )

    id: PackageId
    name: str
    credits: int
    price_cents: int
    """Price in US cents."""
    currency: Literal["usd"]
    price_per_credit: str
    """US dollars per credit, four decimal places (a decimal string, never a float)."""
    available: bool
    """Whether this account can buy the package now."""
    unavailable_reason: UnavailableReason | None


class CreditPackageList(BaseModel):
    packages: list[CreditPackageRead]


SUCCESS_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
"""An http(s) URL of printable ASCII: Polar validates it further and refuses what it cannot
use (which this service answers as `502 payment_provider_error`)."""


class PurchaseIntentCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"package_id": "first_time", "success_url": "https://example.com/thanks"}]
        }
    )

    package_id: PackageId
    success_url: str | None = Field(
        default=None, min_length=8, max_length=2000, pattern=SUCCESS_URL_PATTERN
    )
    """Where Polar sends the buyer after paying."""


class PurchaseIntentRead(BaseModel):
    id: uuid.UUID
    package_id: PackageId
    credits: int
    price_cents: int
    currency: Literal["usd"]
    status: IntentStatus
    checkout_url: str | None
    """Polar's checkout page for this purchase (null for an order paid outside one)."""
    expires_at: datetime | None
    """When the checkout stops accepting payment."""
    created_at: datetime
    completed_at: datetime | None


class PurchaseReviewRead(BaseModel):
    """A paid purchase that was credited but breaks a rule; support decides what to do."""

    purchase_intent_id: uuid.UUID
    package_id: str
    credits: int
    price_cents: int
    polar_order_id: str | None
    completed_at: datetime | None
    reason: str


class WebhookAck(BaseModel):
    received: Literal[True] = True
    duplicate: bool
    """True when this `webhook-id` had been handled before (nothing was done again)."""
