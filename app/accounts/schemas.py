import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.accounts.models import SubscriptionStatus
from app.validation import FilledText


class SubscriptionRead(BaseModel):
    status: SubscriptionStatus
    usable: bool
    """Whether credits can be spent now (trial running, subscription active or paid up)."""
    trial_ends_at: datetime
    current_period_end: datetime | None
    cancel_at_period_end: bool


class AccountRead(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime
    trial_ends_at: datetime
    subscription: SubscriptionRead


EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class AccountCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "owner@example.com"}]})

    email: str = Field(
        min_length=3,
        max_length=320,
        pattern=EMAIL_PATTERN,
        description="The customer's email address (ASCII; lower-cased when stored).",
    )
    """Checked for shape only: the address is the customer's login with Polar, not mailed here."""


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    key: str
    """The secret: shown once, never again."""
    prefix: str
    """The key's public start, to tell keys apart."""
    created_at: datetime


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class AccountCreated(BaseModel):
    account: AccountRead
    api_key: ApiKeyCreated


class ApiKeyCreatedResponse(BaseModel):
    api_key: ApiKeyCreated


class SiteCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"framer_project_id": "xYz123", "name": "My site"}]}
    )

    framer_project_id: FilledText = Field(min_length=1, max_length=200)
    name: FilledText = Field(min_length=1, max_length=200)


class SiteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    framer_project_id: str
    name: str
    created_at: datetime


class SiteList(BaseModel):
    sites: list[SiteRead]


class PluginSessionCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f1e2d3c-4b5a-4968-8776-655443322110",
                    "read_key": "rfr_q9Jx...",
                    "authorize_url": "https://dashboard.rankframe.com/plugin/authorize"
                    "?session=3f1e2d3c-4b5a-4968-8776-655443322110",
                    "expires_at": "2026-12-01T12:10:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    read_key: str
    """The plugin's secret for polling (`Authorization: Bearer <read_key>`); shown once."""
    authorize_url: str
    """Open it in the browser: the dashboard's approval page for this session."""
    expires_at: datetime


class PluginSessionApprove(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"account_id": "5e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"}]}
    )

    account_id: uuid.UUID
    """The account the dashboard signed in."""


class PluginSessionPending(BaseModel):
    status: Literal["pending"]


class PluginSessionApproved(BaseModel):
    status: Literal["approved"]
    api_key: ApiKeyCreated
    """A new key of the approving account, handed out by this one answer only."""
