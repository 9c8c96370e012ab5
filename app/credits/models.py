import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, BigIntPK, UTCDateTime, utcnow

ENTRY_TYPES = ("starter_grant", "purchase", "consumption", "adjustment", "refund_reversal")
HOLD_STATUSES = ("open", "settled", "released", "expired")
DEFAULT_LOW_BALANCE_THRESHOLD = 50
MAX_LOW_BALANCE_THRESHOLD = 10_000_000


class CreditBalance(Base):
    """An account's spendable and held credits: read in O(1), moved only with a ledger row."""

    __tablename__ = "credit_balance"
    __table_args__ = (
        CheckConstraint("available >= 0", name="available_non_negative"),
        CheckConstraint("reserved >= 0", name="reserved_non_negative"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"), primary_key=True)
    available: Mapped[int] = mapped_column(BigInteger, default=0)
    """Credits that can be spent now."""
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    """Credits held by open holds (generations in flight); equals the sum of open holds."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    low_balance_threshold: Mapped[int] = mapped_column(
        BigInteger, default=DEFAULT_LOW_BALANCE_THRESHOLD, server_default="50"
    )
    """Credits: `balance.low` when `available` falls below it; 0 turns alerts off. On this
    row because every balance change locks it: crossings are judged under that lock."""
    alert_state: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    """`ok`, `low` or `depleted`: where the last balance change left the alerts
    (`app.credits.alerts`)."""


class LedgerEntry(Base):
    """One settled change of an account's credits. Append-only: a trigger refuses changes."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint(
            "type IN ('starter_grant', 'purchase', 'consumption', 'adjustment', 'refund_reversal')",
            name="type_known",
        ),
        CheckConstraint("amount <> 0", name="amount_non_zero"),
        Index("ix_ledger_entry_account_seq", "account_id", "seq"),
        Index("ix_ledger_entry_account_created_at", "account_id", "created_at"),
        # Support credits a generation back at most once.
        Index(
            "uq_ledger_entry_credit_back",
            "generation_id",
            unique=True,
            postgresql_where=text("type = 'adjustment' AND generation_id IS NOT NULL"),
            sqlite_where=text("type = 'adjustment' AND generation_id IS NOT NULL"),
        ),
        # Exactly-once by construction: one starter grant per account, one consumption per
        # hold, one purchase per Polar order and one reversal per order and refund level.
        Index(
            "uq_ledger_entry_starter_grant",
            "account_id",
            unique=True,
            postgresql_where=text("type = 'starter_grant'"),
            sqlite_where=text("type = 'starter_grant'"),
        ),
        Index(
            "uq_ledger_entry_consumption_hold",
            "hold_id",
            unique=True,
            postgresql_where=text("type = 'consumption'"),
            sqlite_where=text("type = 'consumption'"),
        ),
        Index(
            "uq_ledger_entry_purchase_order",
            "polar_order_id",
            unique=True,
            postgresql_where=text("type = 'purchase'"),
            sqlite_where=text("type = 'purchase'"),
        ),
        Index(
            "uq_ledger_entry_reversal_order_level",
            "polar_order_id",
            "refunded_cents",
            unique=True,
            postgresql_where=text("type = 'refund_reversal'"),
            sqlite_where=text("type = 'refund_reversal'"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    """Insertion order; the ledger's cursor. Per account it follows commit order."""
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"))
    type: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    """Signed credits: positive grants, negative consumption."""
    balance_after: Mapped[int] = mapped_column(BigInteger)
    """The settled balance (available + reserved) right after this entry."""
    description: Mapped[str] = mapped_column(Text, default="")
    hold_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    generation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    purchase_intent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    polar_order_id: Mapped[str | None] = mapped_column(String(100), default=None)
    refunded_cents: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Refund reversals: the order's cumulative refunded amount this reversal answers."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditHold(Base):
    """Credits moved from available to reserved until settled, released or expired."""

    __tablename__ = "credit_hold"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("consumed >= 0 AND consumed <= amount", name="consumed_within_amount"),
        CheckConstraint(
            "status IN ('open', 'settled', 'released', 'expired')", name="status_known"
        ),
        Index(
            "ix_credit_hold_open_expires_at",
            "expires_at",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    """Credits held."""
    consumed: Mapped[int] = mapped_column(BigInteger, default=0)
    """Credits charged when settled; the rest went back to available."""
    status: Mapped[str] = mapped_column(String(16), default="open")
    reference: Mapped[str] = mapped_column(String(200))
    """What holds the credits, e.g. `generation:<id>` or `batch:<id>:<index>`."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
