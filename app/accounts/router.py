import uuid

from fastapi import APIRouter, Response

from app import flows
from app.accounts import service
from app.accounts.dependencies import AdminAccess, CurrentAccount, OwnedSite
from app.accounts.schemas import (
    AccountCreate,
    AccountCreated,
    AccountRead,
    ApiKeyCreatedResponse,
    SiteCreate,
    SiteList,
    SiteRead,
)
from app.accounts.service import EmailTaken
from app.accounts.views import account_read, api_key_created
from app.db import Session
from app.deps import AppSettings
from app.errors import NotFound, Unauthorized, problem_responses
from app.flows import AdminAccountRead

router = APIRouter()


@router.post(
    "/v1/admin/accounts",
    tags=["admin"],
    status_code=201,
    responses=problem_responses(Unauthorized, EmailTaken),
)
async def create_account(
    body: AccountCreate, session: Session, settings: AppSettings, _: AdminAccess
) -> AccountCreated:
    """Create an account (starting its trial) and its first API key, shown only here."""
    account, key = await flows.create_account(
        session,
        str(body.email),
        trial_days=settings.trial_days,
        low_balance_threshold=settings.low_balance_threshold,
    )
    return AccountCreated(account=account_read(account), api_key=api_key_created(key))


@router.get(
    "/v1/admin/accounts/{account_id}",
    tags=["admin"],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_account(account_id: uuid.UUID, session: Session, _: AdminAccess) -> AdminAccountRead:
    """An account with its balance, subscription and API keys."""
    return await flows.admin_account(session, account_id)


@router.post(
    "/v1/admin/accounts/{account_id}/api-keys",
    tags=["admin"],
    status_code=201,
    responses=problem_responses(Unauthorized, NotFound),
)
async def create_api_key(
    account_id: uuid.UUID, session: Session, _: AdminAccess
) -> ApiKeyCreatedResponse:
    """Add an API key to an account; the secret is shown only here."""
    await service.get_account(session, account_id)
    key = await service.create_api_key(session, account_id)
    return ApiKeyCreatedResponse(api_key=api_key_created(key))


@router.delete(
    "/v1/admin/api-keys/{key_id}",
    tags=["admin"],
    status_code=204,
    responses=problem_responses(Unauthorized, NotFound),
)
async def revoke_api_key(key_id: uuid.UUID, session: Session, _: AdminAccess) -> Response:
    """Revoke an API key; it is refused from the next request on."""
    await service.revoke_api_key(session, key_id)
    return Response(status_code=204)


@router.get("/v1/me", tags=["accounts"], responses=problem_responses(Unauthorized))
async def get_me(account: CurrentAccount) -> AccountRead:
    """The caller's account and subscription."""
    return account_read(account)


@router.post(
    "/v1/sites",
    tags=["sites"],
    status_code=201,
    responses={
        200: {"model": SiteRead, "description": "The site was already connected"},
        **problem_responses(Unauthorized),
    },
)
async def connect_site(
    body: SiteCreate,
    account: CurrentAccount,
    session: Session,
    settings: AppSettings,
    response: Response,
) -> SiteRead:
    """Connect a Framer project; the first site an account ever connects grants the
    starter credits. A project already connected answers 200 with its site."""
    site, created = await flows.connect_site(
        session,
        account.id,
        framer_project_id=body.framer_project_id,
        name=body.name,
        starter_credits=settings.starter_credits,
    )
    if not created:
        response.status_code = 200
    return SiteRead.model_validate(site)


@router.get("/v1/sites", tags=["sites"], responses=problem_responses(Unauthorized))
async def list_sites(account: CurrentAccount, session: Session) -> SiteList:
    """The account's connected sites."""
    sites = await service.list_sites(session, account.id)
    return SiteList(sites=[SiteRead.model_validate(s) for s in sites])


@router.get(
    "/v1/sites/{site_id}",
    tags=["sites"],
    responses=problem_responses(Unauthorized, NotFound),
)
async def get_site(site: OwnedSite) -> SiteRead:
    """One of the account's connected sites; another account's site is 404."""
    return SiteRead.model_validate(site)


@router.delete(
    "/v1/sites/{site_id}",
    tags=["sites"],
    status_code=204,
    responses=problem_responses(Unauthorized, NotFound),
)
async def remove_site(site_id: uuid.UUID, account: CurrentAccount, session: Session) -> Response:
    """Disconnect a site; the account keeps its credits."""
    await service.remove_site(session, account.id, site_id)
    return Response(status_code=204)
