"""Imports every model so `Base.metadata` is complete (Alembic, the reconcile command)."""

from app.accounts.models import Account, ApiKey, Site
from app.credits.models import CreditBalance, CreditHold, LedgerEntry
from app.db import Base
from app.generation.models import (
    Generation,
    GenerationBatch,
    GenerationBatchItem,
    ProviderBatch,
)
from app.idempotency import IdempotencyRecord
from app.payments.models import PurchaseIntent, WebhookEvent

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
    "ProviderBatch",
    "PurchaseIntent",
    "Site",
    "WebhookEvent",
]
