"""Input types shared by every domain's request schemas."""

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field


def _storable(value: str) -> str:
    """Text both databases store as sent: PostgreSQL refuses NUL characters (refused here,
    as the schema's pattern says) and no database can encode a lone UTF-16 surrogate (JSON
    bodies with one are refused by the parser already; this covers other inputs)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


_BLANK = (
    "\t\n\v\f\r \u00a0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
"""White space to JSON Schema's regular expressions (ECMA-262 `\\s`) and to Python's
`str.isspace` alike: the two disagree on U+001C-U+001F, U+0085 and U+FEFF, which therefore
count as text. Spelled out in the published pattern, so every reader judges it the same."""
_BLANK_CLASS = "".join(f"\\u{ord(c):04x}" for c in _BLANK)
_FILLED_PATTERN = f"^[^\\u0000]*[^\\u0000{_BLANK_CLASS}][^\\u0000]*$"
"""No NUL, at least one character that is not white space. (Lone surrogates are refused
too but not spelled out: they are not Unicode text, and generators cannot use the range.)"""


def _filled(value: str) -> str:
    value = value.strip(_BLANK)
    if not value:
        raise ValueError("must not be blank")
    return value


FilledText = Annotated[
    str,
    AfterValidator(_storable),
    AfterValidator(_filled),
    Field(json_schema_extra={"pattern": _FILLED_PATTERN}),
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
