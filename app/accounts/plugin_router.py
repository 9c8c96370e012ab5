"""The plugin's polling sign-in (`app.accounts.plugin_sessions`)."""

import math
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.accounts import plugin_sessions
from app.accounts.dependencies import AdminAccess
from app.accounts.plugin_sessions import (
    PluginSessionApprovedElsewhere,
    PluginSessionGone,
    PluginSessionStatus,
    PluginSignInNotConfigured,
)
from app.accounts.schemas import (
    PluginSessionApprove,
    PluginSessionApproved,
    PluginSessionCreated,
    PluginSessionPending,
)
from app.accounts.views import api_key_created
from app.config import Settings
from app.db import Session
from app.deps import AppSettings, RateLimiters
from app.errors import NotFound, Unauthorized, problem_responses
from app.limits import RateLimited

router = APIRouter(tags=["plugin sign-in"])

_read_key_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="PluginReadKey",
    description="The `read_key` of a plugin session.",
)


def _configured(settings: Settings) -> str:
    if not settings.plugin_authorize_url:
        raise PluginSignInNotConfigured(
            "Plugin sign-in is not configured on this server (PLUGIN_AUTHORIZE_URL)."
        )
    return settings.plugin_authorize_url


async def _limit_by_address(request: Request, limiters: RateLimiters) -> None:
    limiter = limiters["plugin_sessions"]
    assert limiter is not None  # always in-process (`main.create_app`)
    address = request.client.host if request.client else "unknown"
    wait = limiter.acquire(address)
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(
            f"Too many sign-in sessions from this address; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


@router.post(
    "/v1/plugin-sessions",
    status_code=201,
    responses=problem_responses(RateLimited, PluginSignInNotConfigured),
)
async def create_plugin_session(
    session: Session, settings: AppSettings, _: Annotated[None, Depends(_limit_by_address)]
) -> PluginSessionCreated:
    """Start a plugin sign-in (no authentication): open `authorize_url` in the browser and
    poll `GET /v1/plugin-sessions/{id}` with the read key. Lives 10 minutes; rate-limited
    per client address."""
    base = _configured(settings)
    created = await plugin_sessions.create(
        session, ttl=timedelta(seconds=settings.plugin_session_ttl_seconds)
    )
    return PluginSessionCreated(
        id=created.record.id,
        read_key=created.read_key,
        authorize_url=plugin_sessions.authorize_url(base, created.record.id),
        expires_at=created.record.expires_at,
    )


@router.post(
    "/v1/admin/plugin-sessions/{session_id}/approve",
    status_code=204,
    tags=["admin"],
    responses=problem_responses(
        Unauthorized,
        NotFound,
        PluginSessionApprovedElsewhere,
        PluginSessionGone,
        PluginSignInNotConfigured,
    ),
)
async def approve_plugin_session(
    session_id: uuid.UUID,
    body: PluginSessionApprove,
    session: Session,
    settings: AppSettings,
    _: AdminAccess,
) -> Response:
    """The dashboard, after its own sign-in, approves the session for the account."""
    _configured(settings)
    await plugin_sessions.approve(session, session_id, body.account_id)
    return Response(status_code=204)


@router.get(
    "/v1/plugin-sessions/{session_id}",
    responses={
        202: {"model": PluginSessionPending, "description": "Not approved yet: poll again."},
        **problem_responses(Unauthorized, NotFound, PluginSessionGone, PluginSignInNotConfigured),
    },
)
async def poll_plugin_session(
    session_id: uuid.UUID,
    session: Session,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_read_key_bearer)],
) -> PluginSessionApproved:
    """`202 {status: "pending"}` until approved, then `200` with a new API key exactly once;
    `410` after that or once expired; `404` for a wrong read key."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "Send `Authorization: Bearer <read_key>`.", headers={"WWW-Authenticate": "Bearer"}
        )
    _configured(settings)
    polled = await plugin_sessions.poll(session, session_id, credentials.credentials)
    if polled.status is PluginSessionStatus.PENDING or polled.api_key is None:
        return JSONResponse({"status": "pending"}, status_code=202)  # type: ignore[return-value]
    return PluginSessionApproved(status="approved", api_key=api_key_created(polled.api_key))
