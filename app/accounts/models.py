import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

SubscriptionStatus = Literal["trialing", "active", "past_due", "canceled", "expired"]


class Account(Base):
    """A RankFrame customer; its credits are shared by all of its sites."""

    __tablename__ = "account"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    """Lower-cased at creation, so one person gets one account."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    trial_ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subscription_status: Mapped[str] = mapped_column(String(16), default="trialing")
    """trialing, active, past_due, canceled or expired."""
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    polar_subscription_id: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    subscription_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """Newest provider timestamp applied; an older event never overwrites a newer state."""
    first_site_connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """Set once, when the account's first site ever connected (and starter credits were granted)."""


class ApiKey(Base):
    """An account's API key; only its SHA-256 is stored."""

    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"), index=True)
    lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    """The public part of the key after the prefix, used to find the row."""
    secret_hash: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the whole key (keys are 190+ bits of randomness, so no slow hash)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Site(Base):
    """A connected Framer project. Removing one keeps its history (soft delete)."""

    __tablename__ = "site"
    __table_args__ = (
        Index(
            "uq_site_live_project",
            "account_id",
            "framer_project_id",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"), index=True)
    framer_project_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


PLUGIN_SESSION_STATUSES = ("pending", "approved", "claimed")


class PluginSession(Base):
    """The plugin's polling sign-in: created by the plugin, approved by the dashboard, and
    answered once with a new API key. Only the read key's SHA-256 is stored."""

    __tablename__ = "plugin_session"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'claimed')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    read_key_hash: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the read key the plugin polls with (256 random bits)."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, approved (an account chose it) or claimed (its API key was handed out)."""
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("account.id"), default=None)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id"), default=None)
    """The key handed out by the one poll that claimed the session."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
