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

_SPACE = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
"""White space as JSON Schema's regular expressions (ECMA-262 `\\s`) define it, so the
published pattern and this check agree (`str.isspace` also counts \\x1c-\\x1f and \\x85)."""


def _filled(value: str) -> str:
    value = value.strip(_SPACE)
    if not value:
        raise ValueError("must not be blank")
    return value


FilledText = Annotated[
    str,
    AfterValidator(_storable),
    AfterValidator(_filled),
    Field(
        json_schema_extra={
            "pattern": "^[^\\u0000\\ud800-\\udfff]*[^\\s\\u0000\\ud800-\\udfff]"
            "[^\\u0000\\ud800-\\udfff]*$"
        }
    ),
]
"""Stored text with something in it: surrounding white space is trimmed, and text that is
nothing but white space is refused."""


def _json_integer(value: object) -> object:
    """JSON integers only: `true` and `"1"` are not credits (`1.0` is an integer in JSON)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer as JSON Schema defines one: 3 and 3.0, never `true` or `"3"`."""
