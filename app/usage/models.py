import uuid
from datetime import date

from sqlalchemy import BigInteger, Date, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class UsageDay(Base):
    """Credits consumed per account, UTC day, site and kind: the ledger's `consumption`
    entries added up as they are written, so usage reads at most 366 days x sites x kinds
    rows whatever the ledger's size.

    Kept by a database trigger on `ledger_entry` inserts (migration 0008), so every path
    that writes a consumption (the ORM's settle and settle_many, the single generation's
    one-statement charge) counts it in its own transaction, and none can forget to. The
    ledger is append-only, so a count is never taken back; a credit-back is an adjustment,
    not negative usage."""

    __tablename__ = "usage_day"

    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("account.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    """Credits consumed."""
    generations: Mapped[int] = mapped_column(BigInteger)
    """Consumption entries (one per completed generation)."""
