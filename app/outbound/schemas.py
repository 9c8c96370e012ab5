import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

DeliveryStatusName = Literal["pending", "delivered", "failed"]
EventType = Literal[
    "balance.low",
    "balance.depleted",
    "balance.recovered",
    "purchase.completed",
    "purchase.refunded",
]


class DeliveryAttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    status_code: int | None
    """The receiver's HTTP status; null when there was no answer (timeout, refused)."""
    error: str | None
    duration_ms: int


class EventDeliveryRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0c9d8e7f-6a5b-4c3d-9e2f-1a0b9c8d7e6f",
                    "webhook_id": "evt_0c9d8e7f6a5b4c3d9e2f1a0b9c8d7e6f",
                    "type": "balance.low",
                    "account_id": "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                    "status": "delivered",
                    "created_at": "2026-12-01T12:00:00Z",
                    "next_attempt_at": None,
                    "delivered_at": "2026-12-01T12:00:01Z",
                    "failed_at": None,
                    "payload": {
                        "type": "balance.low",
                        "timestamp": "2026-12-01T12:00:00Z",
                        "data": {
                            "account_id": "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                            "available": 49,
                            "reserved": 1,
                            "low_balance_threshold": 50,
                        },
                    },
                    "attempts": [
                        {
                            "attempted_at": "2026-12-01T12:00:01Z",
                            "status_code": 200,
                            "error": None,
                            "duration_ms": 35,
                        }
                    ],
                }
            ]
        }
    )

    id: uuid.UUID
    webhook_id: str
    """The `webhook-id` header of every attempt."""
    type: EventType
    account_id: uuid.UUID
    status: DeliveryStatusName
    created_at: datetime
    next_attempt_at: datetime | None
    """When the next attempt is due (pending only)."""
    delivered_at: datetime | None
    failed_at: datetime | None
    payload: dict[str, Any]
    """The body sent: `{type, timestamp, data}`."""
    attempts: list[DeliveryAttemptRead]


class EventDeliveryPage(BaseModel):
    deliveries: list[EventDeliveryRead]
    next_cursor: str | None
