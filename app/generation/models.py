import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntPK, UTCDateTime, utcnow

GENERATION_KINDS = ("meta_title", "meta_description", "alt_text", "schema")
GENERATION_STATUSES = ("running", "succeeded", "failed")
BATCH_STATUSES = ("queued", "running", "completed", "canceled")
ITEM_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
PRIORITIES = ("standard", "economy")
PRIORITY_KNOWN = "priority IN ('standard', 'economy')"


class Generation(Base):
    """One AI output asked for on its own (`POST /v1/generations`); costs one credit if it
    succeeds and nothing otherwise."""

    __tablename__ = "generation"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('meta_title', 'meta_description', 'alt_text', 'schema')", name="kind_known"
        ),
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status_known"),
        CheckConstraint("credits_charged IN (0, 1)", name="credits_charged_zero_or_one"),
        CheckConstraint(PRIORITY_KNOWN, name="priority_known"),
        Index(
            "ix_generation_running_expires_at",
            "expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id"), index=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    input: Mapped[Any] = mapped_column(JSON)
    output: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    """`generation_failed` or `provider_unavailable` when failed."""
    error_detail: Mapped[str | None] = mapped_column(Text, default=None)
    hold_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    """The credit hold reserved for it (`reference` `generation:<id>`)."""
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When its hold expires: a generation still running then was interrupted."""
    idempotency_record_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("idempotency_record.id"), unique=True, default=None
    )
    credits_charged: Mapped[int] = mapped_column(BigInteger, default=0)
    model: Mapped[str | None] = mapped_column(String(100), default=None)
    input_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    output_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    """Wall time of the provider call(s), in milliseconds."""
    priority: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    """`standard` (the Messages API) or `economy` (the Message Batches API, half price)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class GenerationBatch(Base):
    """Many inputs of one kind, all reserved up front and worked by any server instance."""

    __tablename__ = "generation_batch"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('meta_title', 'meta_description', 'alt_text', 'schema')", name="kind_known"
        ),
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'canceled')", name="status_known"
        ),
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint(PRIORITY_KNOWN, name="priority_known"),
        Index(
            "ix_generation_batch_active",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id"), index=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(Integer)
    """Number of items (one credit reserved for each)."""
    priority: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    """`standard`: the batch workers; `economy`: Anthropic's Message Batches API."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class GenerationBatchItem(Base):
    """One input of a batch and its result; claimed by one worker at a time under a lease."""

    __tablename__ = "generation_batch_item"
    __table_args__ = (
        UniqueConstraint("batch_id", "index", name="uq_generation_batch_item_batch_id_index"),
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')",
            name="status_known",
        ),
        CheckConstraint("credits_charged IN (0, 1)", name="credits_charged_zero_or_one"),
        CheckConstraint(PRIORITY_KNOWN, name="priority_known"),
        # The workers' queue: items waiting, and items whose worker stopped renewing its lease.
        Index(
            "ix_generation_batch_item_pending",
            "status",
            "claimed_until",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("generation_batch.id"))
    index: Mapped[int] = mapped_column(Integer)
    """Position in the request's `items`, from 0."""
    input: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    hold_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    """Its credit hold (`reference` `batch:<batch id>:<index>`)."""
    output: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_detail: Mapped[str | None] = mapped_column(Text, default=None)
    credits_charged: Mapped[int] = mapped_column(BigInteger, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100), default=None)
    """The server instance working on it."""
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    """New on every claim: only the current claimant may record a result."""
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """The claimant's lease; renewed by its heartbeat, reclaimable by anyone once past."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(String(100), default=None)
    input_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    output_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    priority: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")
    """The batch's priority (an economy item retried as a standard call stays `economy`)."""
    provider_batch_id: Mapped[str | None] = mapped_column(String(100), index=True, default=None)
    """Economy: the Anthropic message batch it was sent in (`custom_id` `item-<id>`)."""
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ProviderBatch(Base):
    """One Anthropic message batch of an economy batch. Its id is stored as soon as Anthropic
    accepted it, so any instance polls it and settles its results."""

    __tablename__ = "provider_batch"
    __table_args__ = (
        CheckConstraint("status IN ('submitted', 'settled')", name="status_known"),
        Index(
            "ix_provider_batch_submitted",
            "next_poll_at",
            postgresql_where=text("status = 'submitted'"),
            sqlite_where=text("status = 'submitted'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    """Anthropic's message batch id (`msgbatch_...`)."""
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("generation_batch.id"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    """`submitted` (at Anthropic, polled) or `settled` (every result recorded)."""
    request_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_poll_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Not polled again before then: the instance polling it now holds it until then."""
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """Our batch was canceled: Anthropic's cancel is called until it answered."""
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """When Anthropic accepted the cancel."""
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
