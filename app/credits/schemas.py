import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.accounts.models import SubscriptionStatus
from app.credits.models import MAX_LOW_BALANCE_THRESHOLD
from app.validation import FilledText, JsonInt

LedgerEntryType = Literal[
    "starter_grant", "purchase", "consumption", "adjustment", "refund_reversal"
]
MAX_ADJUSTMENT = 100_000_000


def badge_text(available: int) -> str:
    """The plugin's badge: "60,498 Credits", "1 Credit", "0 Credits"."""
    return f"{available:,} Credit{'' if available == 1 else 's'}"


class BalanceRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "available": 60498,
                    "reserved": 2,
                    "display": "60,498 Credits",
                    "usable": True,
                    "subscription_status": "active",
                    "as_of": "2026-11-26T12:00:00Z",
                }
            ]
        }
    )

    available: int
    """Credits that can be spent now."""
    reserved: int
    """Credits held by generations in flight."""
    display: str
    """The badge text."""
    usable: bool
    """False while the subscription has lapsed: the balance is kept but frozen."""
    subscription_status: SubscriptionStatus
    as_of: datetime


class LedgerEntryRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                    "type": "consumption",
                    "amount": -1,
                    "balance_after": 60498,
                    "created_at": "2026-11-26T12:00:00Z",
                    "description": "AI generation: meta title",
                    "generation_id": "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f",
                    "batch_id": None,
                    "purchase_intent_id": None,
                    "polar_order_id": None,
                }
            ]
        },
    )

    id: uuid.UUID
    type: LedgerEntryType
    amount: int
    """Signed credits."""
    balance_after: int
    """The settled balance (available + reserved) right after this entry."""
    created_at: datetime
    description: str
    generation_id: uuid.UUID | None
    batch_id: uuid.UUID | None
    purchase_intent_id: uuid.UUID | None
    polar_order_id: str | None


class LedgerPage(BaseModel):
    entries: list[LedgerEntryRead]
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class EstimateCredits(BaseModel):
    meta_titles: int
    meta_descriptions: int
    alt_text: int
    schema_: int = Field(alias="schema", serialization_alias="schema")
    total: int

    model_config = ConfigDict(populate_by_name=True)


class EstimateRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "credits": {
                        "meta_titles": 50,
                        "meta_descriptions": 50,
                        "alt_text": 200,
                        "schema": 0,
                        "total": 300,
                    },
                    "recommended_package": "first_time",
                }
            ]
        }
    )

    credits: EstimateCredits
    recommended_package: str
    """The package id the help page's planning guide points to."""


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"amount": 250, "reason": "Refund of credits lost to ticket #4182"}]
        }
    )

    amount: JsonInt = Field(
        ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT, json_schema_extra={"not": {"const": 0}}
    )
    """Credits to add (positive) or take away (negative); never zero. A JSON integer:
    `true` or `"1"` are refused rather than read as credits."""
    reason: FilledText = Field(min_length=1, max_length=500)

    @field_validator("amount")
    @classmethod
    def _non_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be zero")
        return value


class AlertSettingsRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"low_balance_threshold": 50}]})

    low_balance_threshold: int
    """Credits: `balance.low` is sent when `available` falls below it; 0 = no alerts."""


class AlertSettingsUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"low_balance_threshold": 200}]})

    low_balance_threshold: JsonInt = Field(ge=0, le=MAX_LOW_BALANCE_THRESHOLD)
    """Credits (0 to 10,000,000); 0 turns alerts off."""
