"""Imports every model so `Base.metadata` is complete (Alembic, the reconcile command)."""

from app.accounts.models import Account, ApiKey, PluginSession, Site
from app.credits.models import CreditBalance, CreditHold, LedgerEntry
from app.db import Base
from app.generation.models import (
    Generation,
    GenerationBatch,
    GenerationBatchItem,
    ProviderBatch,
)
from app.idempotency import IdempotencyRecord
from app.outbound.models import OutboundAttempt, OutboundEvent
from app.payments.models import PurchaseIntent, WebhookEvent
from app.usage.models import UsageDay

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "CreditBalance",
    "CreditHold",
    "Generation",
    "GenerationBatch",
    "GenerationBatchItem",
    "IdempotencyRecord",
    "LedgerEntry",
    "OutboundAttempt",
    "OutboundEvent",
    "PluginSession",
    "ProviderBatch",
    "PurchaseIntent",
    "Site",
    "UsageDay",
    "WebhookEvent",
]
