"""Keyset cursors over `(created_at, id)`, newest first: the position of the last row seen."""

import uuid
from datetime import UTC, datetime, timedelta

TIME_ID_CURSOR_PATTERN = r"^[0-9]{1,16}_[0-9a-f]{32}$"
"""At most 16 digits of microseconds (up to the year 2286): every such cursor decodes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_time_id(created_at: datetime, row_id: uuid.UUID) -> str:
    return f"{(created_at - _EPOCH) // _MICROSECOND}_{row_id.hex}"


def decode_time_id(cursor: str) -> tuple[datetime, uuid.UUID]:
    micros, _, hex_id = cursor.partition("_")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex_id)
