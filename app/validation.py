"""Input types shared by every domain's request schemas."""

from typing import Annotated

from pydantic import AfterValidator


def _storable(value: str) -> str:
    """Text both databases store as sent: PostgreSQL refuses NUL characters and neither
    database can encode a lone UTF-16 surrogate (JSON allows both as `\\u` escapes)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


StoredText = Annotated[str, AfterValidator(_storable)]
"""A string a client sends that will be stored or echoed: no NUL, no lone surrogates."""
