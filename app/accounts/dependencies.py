"""Authentication dependencies: `CurrentAccount` (API key) and `AdminAccess` (admin token).

`AppSettings` is re-exported for the routers that import it from here."""

import hmac
import uuid
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.accounts import service
from app.accounts.models import Account, Site
from app.db import Session
from app.deps import AppSettings, ReadSessionMaker, Statements
from app.errors import Unauthorized
from app.observability import account_id_var

_bearer = HTTPBearer(auto_error=False, description="An account API key (`rfk_...`).")
_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="The `ADMIN_TOKEN`."
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def bearer_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The API key sent as `Authorization: Bearer <key>` (not yet checked)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send `Authorization: Bearer <api key>`.", headers=_CHALLENGE)
    return credentials.credentials


BearerKey = Annotated[str, Depends(bearer_key)]


def mark_authenticated(request: Request, account_id: uuid.UUID) -> None:
    """Name the account in this request's logs."""
    request.state.account_id = account_id
    account_id_var.set(str(account_id))


async def current_account(
    request: Request,
    raw_key: BearerKey,
    statements: Statements,
    read_sessionmaker: ReadSessionMaker,
) -> Account:
    """The account whose API key authorised the request: one autocommit read on a connection
    given back at once (so an endpoint that calls a model holds no connection meanwhile);
    on PostgreSQL, on the driver pool."""
    if statements is not None:
        account = await service.authenticate_on_driver(statements, raw_key)
    else:
        async with read_sessionmaker() as session:
            account = await service.authenticate(session, raw_key)
    if account is None:
        raise Unauthorized("The API key is unknown or revoked.", headers=_CHALLENGE)
    mark_authenticated(request, account.id)
    return account


CurrentAccount = Annotated[Account, Depends(current_account)]


async def require_admin(
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if not settings.admin_api_enabled:
        raise Unauthorized(
            "Admin endpoints are disabled on this server (ADMIN_API_ENABLED=false).",
            headers=_CHALLENGE,
        )
    if not token:
        raise Unauthorized(
            "Admin endpoints are disabled: ADMIN_TOKEN is not set.", headers=_CHALLENGE
        )
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("A valid admin token is required.", headers=_CHALLENGE)


AdminAccess = Annotated[None, Depends(require_admin)]


async def owned_site(site_id: uuid.UUID, account: CurrentAccount, session: Session) -> Site:
    """Load the caller's site or answer 404."""
    return await service.get_site(session, account.id, site_id)


OwnedSite = Annotated[Site, Depends(owned_site)]

__all__ = ["AdminAccess", "AppSettings", "BearerKey", "CurrentAccount", "OwnedSite"]
