"""Input types shared by every domain's request schemas."""

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field


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


StoredText = Annotated[
    str,
    AfterValidator(_storable),
    Field(json_schema_extra={"pattern": "^[^\\u0000\\ud800-\\udfff]*$"}),
]
"""A string a client sends that will be stored or echoed: no NUL, no lone surrogates."""


def _json_integer(value: object) -> object:
    """JSON integers only: `true` and `"1"` are not credits (`1.0` is an integer in JSON)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer as JSON Schema defines one: 3 and 3.0, never `true` or `"3"`."""
