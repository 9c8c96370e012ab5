"""Usage over time and the ledger as CSV."""

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.usage import repository

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
EXPORT_CHUNK_ROWS = 2000
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class DateRange:
    """UTC days, both ends included."""

    first: date
    last: date

    @property
    def start(self) -> datetime | None:
        """Midnight starting the first day (None: from the beginning)."""
        if self.first == date.min:
            return None
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime | None:
        """Midnight after the last day (None: up to now)."""
        if self.last >= date.max - timedelta(days=1):
            return None
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)


def default_range(today: date) -> DateRange:
    return DateRange(today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today)


@dataclass(frozen=True)
class Bucket:
    key: str
    credits: int
    generations: int


async def usage(
    session: AsyncSession, account_id: uuid.UUID, group_by: str, days: DateRange
) -> list[Bucket]:
    """Credits consumed by completed generations (the ledger's `consumption` entries) per
    day, site or kind. Credit-backs are adjustments and do not lower usage."""
    rows = await repository.usage_buckets(session, account_id, group_by, days.first, days.last)
    return [Bucket(key, credits, generations) for key, credits, generations in rows]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _text_cell(value: str | None) -> str:
    """Free text, defused for spreadsheets: a leading `=`, `+`, `-` or `@` would run as a
    formula (OWASP CSV injection), so such text starts with a `'`."""
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


async def export_csv(
    engine: AsyncEngine, account_id: uuid.UUID, days: DateRange | None
) -> AsyncIterator[bytes]:
    """The ledger as CSV (`repository.EXPORT_COLUMNS`), oldest first, produced chunk by
    chunk from a server-side cursor: memory stays flat whatever the ledger's size."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(repository.EXPORT_COLUMNS)
    yield buffer.getvalue().encode()
    description = repository.EXPORT_COLUMNS.index("description")
    async with engine.connect() as connection, connection.begin():
        async for rows in repository.stream_entries(
            connection,
            account_id,
            days.start if days else None,
            days.end if days else None,
            chunk=EXPORT_CHUNK_ROWS,
        ):
            buffer.seek(0)
            buffer.truncate()
            for row in rows:
                cells = [_cell(value) for value in row]
                cells[description] = _text_cell(row[description])
                writer.writerow(cells)
            yield buffer.getvalue().encode()
