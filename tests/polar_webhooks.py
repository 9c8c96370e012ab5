"""Sign Polar webhook deliveries the way Polar does, with either of its two keys."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, Literal

SECRET = "whsec_" + base64.b64encode(b"rankframe-test-webhook-secret-32b").decode()
"""A `whsec_` secret whose remainder is valid base64, as Polar's newer secrets are."""

KeyForm = Literal["legacy", "standard"]


def signing_key(secret: str, form: KeyForm) -> bytes:
    """`legacy`: the UTF-8 bytes of the whole `whsec_...` string (older Polar secrets);
    `standard`: the base64-decoded part after `whsec_` (plain Standard Webhooks)."""
    if form == "legacy":
        return secret.encode()
    return base64.b64decode(secret.removeprefix("whsec_"))


def signed_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    form: KeyForm = "standard",
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(
        hmac.new(signing_key(secret, form), signed, hashlib.sha256).digest()
    ).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


def delivery(event_type: str, data: dict[str, Any], **sign: Any) -> tuple[bytes, dict[str, str]]:
    """A signed delivery: (raw body, headers)."""
    body = json.dumps(
        {
            "type": event_type,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "api_version": "2026-10",
            "data": data,
        }
    ).encode()
    return body, signed_headers(body, **sign)


def order(
    *,
    order_id: str | None = None,
    product_id: str,
    account_id: uuid.UUID | str | None,
    metadata: dict[str, Any] | None = None,
    checkout_id: str | None = None,
    status: str = "paid",
    total_amount: int = 10_000,
    refunded_amount: int = 0,
) -> dict[str, Any]:
    """The fields of a Polar `Order` this service reads (the real payload has many more)."""
    return {
        "id": order_id or str(uuid.uuid4()),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modified_at": None,
        "status": status,
        "paid": status != "pending",
        "total_amount": total_amount,
        "refunded_amount": refunded_amount,
        "currency": "usd",
        "billing_reason": "purchase",
        "customer_id": str(uuid.uuid4()),
        "product_id": product_id,
        "checkout_id": checkout_id,
        "subscription_id": None,
        "metadata": metadata or {},
        "customer": {
            "id": str(uuid.uuid4()),
            "external_id": str(account_id) if account_id else None,
            "email": "buyer@example.com",
        },
    }


def subscription(
    *,
    subscription_id: str,
    account_id: uuid.UUID | str,
    status: str,
    modified_at: str,
    current_period_end: str,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "created_at": "2026-01-01T00:00:00Z",
        "modified_at": modified_at,
        "status": status,
        "current_period_start": "2026-01-01T00:00:00Z",
        "current_period_end": current_period_end,
        "cancel_at_period_end": cancel_at_period_end,
        "customer_id": str(uuid.uuid4()),
        "product_id": str(uuid.uuid4()),
        "metadata": {},
        "customer": {"id": str(uuid.uuid4()), "external_id": str(account_id)},
    }
