"""What counts as a usable output, whichever provider made it.

An output that breaks these rules is never charged: the provider retries once within the
same hold, then the generation fails."""

import json
import re
from typing import Any

from app.generation.providers.base import GenerationKind

TEXT_LIMITS = {
    GenerationKind.META_TITLE: 60,
    GenerationKind.META_DESCRIPTION: 160,
    GenerationKind.ALT_TEXT: 125,
}
"""Maximum characters of each text kind (what search engines show, what screen readers
read without cutting)."""

SCHEMA_TYPES = (
    "Article",
    "Product",
    "Organization",
    "LocalBusiness",
    "FAQPage",
    "WebPage",
    "Event",
    "Person",
)
SCHEMA_CONTEXT = "https://schema.org"
MAX_SCHEMA_JSON_CHARS = 20_000

_ALT_FILLER = re.compile(
    r"^\s*(an?\s+|the\s+)?(image|picture|photo|photograph|graphic|illustration|screenshot)"
    r"\s+(of|showing|shows|depicting|depicts|with)\s+",
    re.IGNORECASE,
)
_LABEL_PREFIX = re.compile(
    r"^\s*(meta\s+title|title|meta\s+description|description|alt\s+text|alt)\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»「」"


class InvalidOutput(ValueError):
    """The output breaks a rule of its kind; `reason` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def clean_text(kind: GenerationKind, raw: str) -> str:
    """Normalise a model's text answer: one line, no label, no wrapping quotes, no
    "image of" filler for alt text."""
    text = " ".join(raw.split())
    text = _LABEL_PREFIX.sub("", text)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if kind is GenerationKind.ALT_TEXT:
        stripped = _ALT_FILLER.sub("", text)
        if stripped != text and stripped:
            text = stripped[0].upper() + stripped[1:]
    return text


def check_text(kind: GenerationKind, text: str) -> dict[str, Any]:
    limit = TEXT_LIMITS[kind]
    if not text:
        raise InvalidOutput("empty_output", "The model returned no text.")
    if len(text) > limit:
        raise InvalidOutput(
            "output_too_long", f"The {kind.value} has {len(text)} characters; at most {limit}."
        )
    if kind is GenerationKind.ALT_TEXT and _ALT_FILLER.match(text):
        raise InvalidOutput("filler", 'Alt text must not start with "image of" filler.')
    return {"text": text}


def _schema_json_schema(schema_type: str) -> dict[str, Any]:
    """The JSON Schema Claude's structured output must follow for one schema.org type."""
    text = {"type": "string"}
    properties: dict[str, Any] = {
        "@context": {"type": "string", "enum": [SCHEMA_CONTEXT]},
        "@type": {"type": "string", "enum": [schema_type]},
    }
    required = ["@context", "@type"]
    if schema_type == "Article":
        properties |= {
            "headline": text,
            "description": text,
            "url": text,
            "inLanguage": text,
            "keywords": text,
            "author": {
                "type": "object",
                "properties": {"@type": {"type": "string", "enum": ["Person", "Organization"]}}
                | {"name": text},
                "required": ["@type", "name"],
                "additionalProperties": False,
            },
        }
        required.append("headline")
    elif schema_type == "FAQPage":
        question = {
            "type": "object",
            "properties": {
                "@type": {"type": "string", "enum": ["Question"]},
                "name": text,
                "acceptedAnswer": {
                    "type": "object",
                    "properties": {"@type": {"type": "string", "enum": ["Answer"]}, "text": text},
                    "required": ["@type", "text"],
                    "additionalProperties": False,
                },
            },
            "required": ["@type", "name", "acceptedAnswer"],
            "additionalProperties": False,
        }
        properties |= {"name": text, "mainEntity": {"type": "array", "items": question}}
        required.append("mainEntity")
    else:
        properties |= {"name": text, "description": text, "url": text}
        if schema_type == "Product":
            properties |= {"brand": text, "sku": text, "image": text}
        elif schema_type in ("Organization", "LocalBusiness"):
            properties |= {"logo": text, "email": text, "telephone": text}
            if schema_type == "LocalBusiness":
                properties |= {"address": text, "openingHours": text, "priceRange": text}
        elif schema_type == "Event":
            properties |= {"startDate": text, "endDate": text, "location": text}
        elif schema_type == "Person":
            properties |= {"jobTitle": text, "worksFor": text}
        required.append("name")
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


SCHEMA_JSON_SCHEMAS = {
    schema_type: _schema_json_schema(schema_type) for schema_type in SCHEMA_TYPES
}


def _non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_schema(schema_type: str, raw: str | dict[str, Any]) -> dict[str, Any]:
    """A JSON-LD object of the requested `@type`, with the fields that type needs."""
    if isinstance(raw, str):
        if len(raw) > MAX_SCHEMA_JSON_CHARS:
            raise InvalidOutput("output_too_long", "The schema JSON is too large.")
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise InvalidOutput("invalid_json", f"The schema is not valid JSON: {exc}") from exc
    else:
        document = raw
    if not isinstance(document, dict):
        raise InvalidOutput("invalid_schema", "The schema is not a JSON object.")
    context = document.get("@context")
    if context not in (SCHEMA_CONTEXT, SCHEMA_CONTEXT + "/", "http://schema.org"):
        raise InvalidOutput("invalid_schema", f"`@context` must be {SCHEMA_CONTEXT}.")
    document["@context"] = SCHEMA_CONTEXT
    if document.get("@type") != schema_type:
        raise InvalidOutput(
            "invalid_schema", f"`@type` is {document.get('@type')!r}, not {schema_type!r}."
        )
    if schema_type == "Article":
        if not _non_empty_string(document.get("headline")):
            raise InvalidOutput("invalid_schema", "An Article needs a `headline`.")
    elif schema_type == "FAQPage":
        questions = document.get("mainEntity")
        if not isinstance(questions, list) or not questions:
            raise InvalidOutput("invalid_schema", "An FAQPage needs questions in `mainEntity`.")
        for question in questions:
            answer = question.get("acceptedAnswer") if isinstance(question, dict) else None
            if (
                not isinstance(question, dict)
                or question.get("@type") != "Question"
                or not _non_empty_string(question.get("name"))
                or not isinstance(answer, dict)
                or not _non_empty_string(answer.get("text"))
            ):
                raise InvalidOutput(
                    "invalid_schema", "Every FAQPage question needs a name and an answer text."
                )
    elif not _non_empty_string(document.get("name")):
        raise InvalidOutput("invalid_schema", f"A {schema_type} needs a `name`.")
    if len(json.dumps(document)) > MAX_SCHEMA_JSON_CHARS:
        raise InvalidOutput("output_too_long", "The schema JSON is too large.")
    return {"schema": document}
