"""Admin adjustments: credits added or taken away by hand, once per `Idempotency-Key`."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app import idempotency
from app.accounts import service as accounts
from app.credits import service
from app.credits.schemas import AdjustmentCreate, LedgerEntryRead
from app.idempotency import IdempotentRequest, Replay


async def adjust(
    session: AsyncSession,
    account_id: uuid.UUID,
    adjustment: AdjustmentCreate,
    request: IdempotentRequest,
) -> LedgerEntryRead | Replay:
    """Grant or take the adjustment's credits with its reason in the ledger, or the stored
    answer of the key's first request. An unknown account is 404 before the key is looked
    at; taking more than `available` is `409 insufficient_credits` (nothing is stored: the
    whole transaction rolls back, the key with it)."""
    await accounts.get_account(session, account_id)
    started = await idempotency.begin(session, request)
    if isinstance(started, Replay):
        return started
    description = f"Adjustment: {adjustment.reason}"
    if adjustment.amount > 0:
        entry = await service.grant(
            session, account_id, adjustment.amount, type="adjustment", description=description
        )
    else:
        taken = await service.take(
            session, account_id, -adjustment.amount, type="adjustment", description=description
        )
        assert taken is not None  # without `at_most_available`, too few credits raise
        entry = taken
    result = LedgerEntryRead.model_validate(entry)
    await idempotency.finish(session, started, 201, result.model_dump(mode="json"))
    return result
