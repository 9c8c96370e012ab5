"""The one Polar API client of the process and the single call this service makes with it."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.config import Settings
from app.errors import AppError

if TYPE_CHECKING:
    from polar.v2026_10 import PolarAsync

logger = logging.getLogger(__name__)


class PaymentProviderError(AppError):
    status = 502
    code = "payment_provider_error"
    title = "The payment provider did not complete the request"


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    expires_at: datetime


@contextlib.asynccontextmanager
async def polar_client(settings: Settings) -> AsyncIterator["PolarAsync | None"]:
    """One client (one connection pool) per app lifetime; None without an access token.

    polar-sdk takes seconds to import, so it is imported only when payments are configured
    (at startup, so the first checkout or webhook does not pay for it)."""
    if settings.polar_webhook_secret is not None:
        import polar.webhooks  # noqa: F401
    if settings.polar_access_token is None:
        yield None
        return
    from polar.v2026_10 import PolarAsync

    client = PolarAsync(
        settings.polar_access_token.get_secret_value(),
        base_url=settings.polar_server_url.rstrip("/"),
        timeout=settings.polar_timeout_seconds,
    )
    async with client:
        yield client


async def create_checkout(
    client: "PolarAsync",
    *,
    product_id: str,
    account_id: uuid.UUID,
    purchase_intent_id: uuid.UUID,
    package_id: str,
    success_url: str | None,
    timeout_seconds: float,
) -> CheckoutSession:
    """Open a Polar checkout for one package. Any failure (an error answer, a timeout, an
    unreadable answer) is `PaymentProviderError`."""
    from polar.base import PolarError

    try:
        # httpx's timeout is per phase; this bounds the whole call.
        async with asyncio.timeout(timeout_seconds):
            checkout = await client.checkouts.create(
                products=[product_id],
                external_customer_id=str(account_id),
                metadata={
                    "purchase_intent_id": str(purchase_intent_id),
                    "package_id": package_id,
                },
                success_url=success_url,
            )
        expires_at = datetime.fromisoformat(checkout.expires_at).astimezone(UTC)
    except (PolarError, ValueError, TimeoutError) as exc:
        logger.warning(
            "polar checkout creation failed",
            extra={"purchase_intent_id": str(purchase_intent_id), "error": type(exc).__name__},
        )
        raise PaymentProviderError(
            "Polar could not open a checkout just now; nothing was charged. Try again."
        ) from exc
    return CheckoutSession(id=checkout.id, url=checkout.url, expires_at=expires_at)
