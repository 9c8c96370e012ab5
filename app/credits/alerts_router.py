"""The account's alert settings (what its low-balance events are judged by)."""

from fastapi import APIRouter

from app.accounts.dependencies import CurrentAccount
from app.credits import alerts
from app.credits.schemas import AlertSettingsRead, AlertSettingsUpdate
from app.db import Session
from app.errors import Unauthorized, problem_responses

router = APIRouter(tags=["alerts"])


@router.get("/v1/alert-settings", responses=problem_responses(Unauthorized))
async def get_alert_settings(account: CurrentAccount, session: Session) -> AlertSettingsRead:
    """The account's low-balance threshold."""
    return AlertSettingsRead(low_balance_threshold=await alerts.get_threshold(session, account.id))


@router.put("/v1/alert-settings", responses=problem_responses(Unauthorized))
async def update_alert_settings(
    body: AlertSettingsUpdate, account: CurrentAccount, session: Session
) -> AlertSettingsRead:
    """Set the low-balance threshold (0 turns alerts off). The balance is judged against
    the new threshold at once: raising it above `available` sends `balance.low`."""
    threshold = await alerts.set_threshold(session, account.id, body.low_balance_threshold)
    return AlertSettingsRead(low_balance_threshold=threshold)
