import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.credits.schemas import LedgerEntryRead
from app.validation import FilledText

SupportStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
"""A single generation is running, succeeded or failed; a batch item may also be queued or
canceled."""


class SupportGenerationRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f",
                    "account_id": "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                    "site_id": "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
                    "batch_id": None,
                    "kind": "meta_title",
                    "status": "succeeded",
                    "credits_charged": 1,
                    "model": "claude-haiku-5-5",
                    "input_tokens": 812,
                    "output_tokens": 19,
                    "latency_ms": 640,
                    "error_code": None,
                    "created_at": "2026-12-01T12:00:00Z",
                    "completed_at": "2026-12-01T12:00:01Z",
                }
            ]
        }
    )

    id: uuid.UUID
    """A single generation's id, or a batch item's (the id of its credit hold)."""
    account_id: uuid.UUID
    site_id: uuid.UUID
    batch_id: uuid.UUID | None
    """Set for a batch item."""
    kind: Literal["meta_title", "meta_description", "alt_text", "schema"]
    status: SupportStatus
    credits_charged: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: int | None
    error_code: str | None
    created_at: datetime
    """When it was asked for (a batch item: when its batch was)."""
    completed_at: datetime | None


class SupportGenerationPage(BaseModel):
    generations: list[SupportGenerationRead]
    next_cursor: str | None


class SupportGenerationDetail(SupportGenerationRead):
    ledger_entries: list[LedgerEntryRead]
    """Its consumption entry and its credit-back, if any, oldest first."""
    credited_back: bool


class CreditBackCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "Ticket #4182: output cut off by a timeout"}]}
    )

    reason: FilledText = Field(min_length=1, max_length=500)
