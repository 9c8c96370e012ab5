import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from app.credits.schemas import BalanceRead
from app.generation.outputs import SCHEMA_TYPES
from app.validation import FilledText

MAX_BATCH_ITEMS = 1000
MAX_PAGE_CONTENT = 50_000

GenerationKindName = Literal["meta_title", "meta_description", "alt_text", "schema"]
SchemaType = Literal[
    "Article", "Product", "Organization", "LocalBusiness", "FAQPage", "WebPage", "Event", "Person"
]
assert set(SchemaType.__args__) == set(SCHEMA_TYPES)  # type: ignore[attr-defined]

LanguageTag = Annotated[
    str,
    Field(
        min_length=2,
        max_length=35,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="BCP 47 language tag of the page, e.g. `en`, `de-CH`.",
    ),
]
Keyword = Annotated[str, Field(min_length=1, max_length=100)]
PageUrl = HttpUrl


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageInput(_Input):
    """Input of `meta_title` and `meta_description`."""

    page_title: str | None = Field(default=None, max_length=300)
    page_url: PageUrl | None = None
    page_content: FilledText = Field(min_length=1, max_length=MAX_PAGE_CONTENT)
    """The page's text, plain."""
    language: LanguageTag | None = None
    keywords: list[Keyword] | None = Field(default=None, max_length=20)


class AltTextInput(_Input):
    """Input of `alt_text`."""

    image_url: HttpUrl
    """Where Claude fetches the image: an `https` URL."""
    context: str | None = Field(default=None, max_length=2000)
    """What the image is used for on the page (its caption, the surrounding text)."""
    language: LanguageTag | None = None

    @field_validator("image_url")
    @classmethod
    def _https_only(cls, value: HttpUrl) -> HttpUrl:
        if value.scheme != "https":
            raise ValueError("must be an https URL")
        return value


class SchemaInput(_Input):
    """Input of `schema`."""

    schema_type: SchemaType
    page_title: str | None = Field(default=None, max_length=300)
    page_url: PageUrl | None = None
    page_content: FilledText = Field(min_length=1, max_length=MAX_PAGE_CONTENT)


class _GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site_id: uuid.UUID


class MetaTitleCreate(_GenerationCreate):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "meta_title",
                    "site_id": "3f0c6a52-8d1e-4c59-9a7e-2b1f0e6d4c11",
                    "input": {
                        "page_title": "Handmade oak furniture | Atelier Nord",
                        "page_content": "Atelier Nord builds solid oak tables by hand in Oslo.",
                        "language": "en",
                    },
                }
            ]
        },
    )

    kind: Literal["meta_title"]
    input: PageInput


class MetaDescriptionCreate(_GenerationCreate):
    kind: Literal["meta_description"]
    input: PageInput


class AltTextCreate(_GenerationCreate):
    kind: Literal["alt_text"]
    input: AltTextInput


class SchemaCreate(_GenerationCreate):
    kind: Literal["schema"]
    input: SchemaInput


GenerationCreate = Annotated[
    MetaTitleCreate | MetaDescriptionCreate | AltTextCreate | SchemaCreate,
    Field(discriminator="kind"),
]


Priority = Literal["standard", "economy"]


class _BatchCreate(_GenerationCreate):
    priority: Priority | None = None
    """`standard` (when omitted): worked now, item after item; `economy`: through Anthropic's
    Message Batches API at half the model cost, results within 24 hours."""


class MetaTitleBatchCreate(_BatchCreate):
    kind: Literal["meta_title"]
    items: list[PageInput] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class MetaDescriptionBatchCreate(_BatchCreate):
    kind: Literal["meta_description"]
    items: list[PageInput] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class AltTextBatchCreate(_BatchCreate):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "alt_text",
                    "site_id": "3f0c6a52-8d1e-4c59-9a7e-2b1f0e6d4c11",
                    "items": [
                        {
                            "image_url": "https://cdn.example.com/oak-table.jpg",
                            "context": "Handmade oak furniture",
                        },
                        {"image_url": "https://cdn.example.com/workshop.jpg"},
                    ],
                }
            ]
        },
    )

    kind: Literal["alt_text"]
    items: list[AltTextInput] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class SchemaBatchCreate(_BatchCreate):
    kind: Literal["schema"]
    items: list[SchemaInput] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


BatchCreate = Annotated[
    MetaTitleBatchCreate | MetaDescriptionBatchCreate | AltTextBatchCreate | SchemaBatchCreate,
    Field(discriminator="kind"),
]


class TextOutput(BaseModel):
    text: str


class SchemaOutput(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    """A JSON-LD object with `@context` `https://schema.org` and the requested `@type`."""


GenerationOutput = TextOutput | SchemaOutput


class GenerationError(BaseModel):
    code: str
    """`generation_failed` or `provider_unavailable`."""
    reason: str | None = None
    """What went wrong, e.g. `timeout`, `output_too_long`, `rate_limited`."""
    detail: str


class GenerationUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    latency_ms: int
    """Wall time of the provider call(s)."""


class GenerationRead(BaseModel):
    id: uuid.UUID
    kind: GenerationKindName
    site_id: uuid.UUID
    status: Literal["running", "succeeded", "failed"]
    output: GenerationOutput | None
    error: GenerationError | None
    credits_charged: int
    """1 for a completed output, 0 otherwise."""
    model: str | None
    usage: GenerationUsage | None
    created_at: datetime
    completed_at: datetime | None


class GenerationCreated(GenerationRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "4f6b0d1e-3a55-4a57-9a4e-0b7f3f0e7c11",
                    "kind": "meta_title",
                    "site_id": "9a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                    "status": "succeeded",
                    "output": {"text": "Handmade Oak Dining Tables | Vermont Woodworks"},
                    "error": None,
                    "credits_charged": 1,
                    "model": "claude-haiku-4-5",
                    "usage": {"input_tokens": 812, "output_tokens": 14, "latency_ms": 930},
                    "created_at": "2026-11-26T12:00:00Z",
                    "completed_at": "2026-11-26T12:00:01Z",
                    "balance": {
                        "available": 499,
                        "reserved": 0,
                        "display": "499 Credits",
                        "usable": True,
                        "subscription_status": "trialing",
                        "as_of": "2026-11-26T12:00:01Z",
                    },
                }
            ]
        }
    )

    balance: BalanceRead
    """The balance right after this generation was charged."""


BatchStatus = Literal["queued", "running", "completed", "canceled"]
ItemStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class BatchRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9b2d7c1e-0a4f-4e8b-b6d2-5c3a1f9e8d70",
                    "kind": "alt_text",
                    "site_id": "3f0c6a52-8d1e-4c59-9a7e-2b1f0e6d4c11",
                    "status": "running",
                    "priority": "standard",
                    "total": 72,
                    "succeeded": 40,
                    "failed": 2,
                    "canceled": 0,
                    "pending": 30,
                    "credits_charged": 40,
                    "created_at": "2026-11-26T12:00:00Z",
                    "completed_at": None,
                    "canceled_at": None,
                }
            ]
        }
    )

    id: uuid.UUID
    kind: GenerationKindName
    site_id: uuid.UUID
    status: BatchStatus
    priority: Priority
    total: int
    succeeded: int
    failed: int
    canceled: int
    """Items stopped by a cancel before they were generated; their credits were released."""
    pending: int
    """Items queued or being generated."""
    credits_charged: int
    """One per succeeded item."""
    created_at: datetime
    completed_at: datetime | None
    canceled_at: datetime | None


class BatchItemRead(BaseModel):
    index: int
    status: ItemStatus
    output: GenerationOutput | None = None
    error: GenerationError | None = None


class BatchDetail(BatchRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9b2d7c1e-0a4f-4e8b-b6d2-5c3a1f9e8d70",
                    "kind": "alt_text",
                    "site_id": "3f0c6a52-8d1e-4c59-9a7e-2b1f0e6d4c11",
                    "status": "completed",
                    "priority": "standard",
                    "total": 2,
                    "succeeded": 1,
                    "failed": 1,
                    "canceled": 0,
                    "pending": 0,
                    "credits_charged": 1,
                    "created_at": "2026-11-26T12:00:00Z",
                    "completed_at": "2026-11-26T12:00:04Z",
                    "canceled_at": None,
                    "items": [
                        {"index": 0, "status": "succeeded", "output": {"text": "Oak dining table"}},
                        {
                            "index": 1,
                            "status": "failed",
                            "error": {"code": "generation_failed", "detail": "Timed out."},
                        },
                    ],
                }
            ]
        }
    )

    items: list[BatchItemRead]


class BatchProgressEvent(BaseModel):
    """The data of a batch's `progress` and `done` events."""

    batch: BatchRead
    item: BatchItemRead | None
    """The item that just finished; null in the first event and in `done`."""
