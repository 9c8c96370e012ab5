import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from app import idempotency
from app.accounts.dependencies import CurrentAccount
from app.accounts.service import SubscriptionInactive
from app.db import Session, SessionMaker
from app.deps import AppSettings, PolarClient
from app.errors import IdempotencyKeyReused, NotFound, Unauthorized, problem_responses
from app.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH, IdempotentRequestInProgress
from app.limits import PayloadTooLarge, RateLimited, rate_limit
from app.payments import service, webhooks
from app.payments.polar import PaymentProviderError
from app.payments.schemas import (
    CreditPackageList,
    CreditPackageRead,
    PurchaseIntentCreate,
    PurchaseIntentRead,
    WebhookAck,
)
from app.payments.service import (
    FirstTimeOfferUnavailable,
    PaymentsNotConfigured,
    PurchaseInProgress,
    intent_read,
)
from app.payments.webhooks import InvalidSignature, InvalidWebhookPayload

router = APIRouter()

OptionalIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        description="A unique key per intended purchase; a retry with it returns the same intent.",
    ),
]


@router.get("/v1/credit-packages", tags=["purchases"], responses=problem_responses(Unauthorized))
async def list_credit_packages(
    account: CurrentAccount, session: Session, settings: AppSettings
) -> CreditPackageList:
    """The credit packages, and whether this account can buy each one now."""
    offers = await service.list_offers(session, settings, account)
    return CreditPackageList(
        packages=[
            CreditPackageRead(
                id=offer.package.id,  # type: ignore[arg-type]
                name=offer.package.name,
                credits=offer.package.credits,
                price_cents=offer.package.price_cents,
                currency="usd",
                price_per_credit=offer.package.price_per_credit,
                available=offer.available,
                unavailable_reason=offer.unavailable_reason,  # type: ignore[arg-type]
            )
            for offer in offers
        ]
    )


@router.post(
    "/v1/purchase-intents",
    tags=["purchases"],
    status_code=201,
    dependencies=[Depends(rate_limit("purchases"))],
    responses={
        200: {
            "model": PurchaseIntentRead,
            "description": "The account's open first-time checkout, instead of a second one",
        },
        **problem_responses(
            Unauthorized,
            SubscriptionInactive,
            FirstTimeOfferUnavailable,
            PurchaseInProgress,
            IdempotencyKeyReused,
            IdempotentRequestInProgress,
            RateLimited,
            PaymentProviderError,
            PaymentsNotConfigured,
        ),
    },
)
async def create_purchase_intent(
    body: PurchaseIntentCreate,
    account: CurrentAccount,
    sessionmaker: SessionMaker,
    settings: AppSettings,
    polar: PolarClient,
    response: Response,
    idempotency_key: OptionalIdempotencyKey = None,
) -> PurchaseIntentRead:
    """Open a Polar checkout for a credit package; pay at `checkout_url`. The credits arrive
    when Polar confirms the payment."""
    request = idempotency.IdempotentRequest.of(
        idempotency.account_scope(account.id),
        idempotency_key,
        "POST",
        "/v1/purchase-intents",
        body.model_dump(mode="json"),
    )
    outcome = await service.purchase(
        sessionmaker,
        settings,
        polar,
        account.id,
        body.package_id,
        success_url=str(body.success_url) if body.success_url else None,
        request=request,
    )
    if isinstance(outcome, idempotency.Replay):
        return outcome.response()  # type: ignore[return-value]
    if not outcome.created:
        response.status_code = 200
    return outcome.intent


@router.get(
    "/v1/purchase-intents/{intent_id}",
    tags=["purchases"],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_purchase_intent(
    intent_id: uuid.UUID, account: CurrentAccount, session: Session
) -> PurchaseIntentRead:
    """One of the account's purchase intents: `open`, `completed`, `expired` or `refunded`."""
    return intent_read(await service.get_intent(session, account.id, intent_id))


_SIGNATURE_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The delivery's unique id; a repeat of an id is acknowledged, not redone.",
        "schema": {"type": "string"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds when Polar signed the delivery; more than 5 minutes "
        "away from now is refused.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<base64 HMAC-SHA256>` signatures of "
        "`<webhook-id>.<webhook-timestamp>.<raw body>` (Standard Webhooks).",
        "schema": {"type": "string"},
    },
]


@router.post(
    "/v1/webhooks/polar",
    tags=["webhooks"],
    status_code=202,
    responses=problem_responses(InvalidWebhookPayload, InvalidSignature, PayloadTooLarge),
    openapi_extra={
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {
            "required": True,
            "description": "Polar's event, verified on the exact bytes sent.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["type", "data"],
                        "properties": {
                            "type": {"type": "string", "examples": ["order.paid"]},
                            "timestamp": {"type": "string", "format": "date-time"},
                            "data": {"type": "object"},
                        },
                    }
                }
            },
        },
    },
)
async def receive_polar_webhook(
    request: Request, sessionmaker: SessionMaker, settings: AppSettings
) -> WebhookAck:
    """Polar's Standard Webhooks deliveries. Verified on the raw body; each `webhook-id` is
    handled once (a repeat answers 202 and does nothing)."""
    body = await request.body()
    secret = settings.polar_webhook_secret
    delivery = webhooks.verify(body, request.headers, secret.get_secret_value() if secret else None)
    async with sessionmaker() as session, session.begin():
        handled = await webhooks.receive(session, settings, delivery)
    return WebhookAck(duplicate=not handled)
