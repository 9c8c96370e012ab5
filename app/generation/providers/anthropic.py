"""Claude through the official SDK: one `AsyncAnthropic` client per app lifetime.

The SDK retries connection errors, timeouts, 429, 5xx and 529 itself (`max_retries`);
what still fails after that is ours to map: 429 and 529 (and 503) mean "try again later",
everything else means this generation failed. An output that breaks its kind's rules is
asked for once more within the same hold, then fails. Nothing here is ever charged: the
service charges only a `ProviderResult`."""

import math
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anthropic
from anthropic.types import MessageParam, TextBlockParam

from app.config import Settings
from app.generation.budget import trim_to_budget
from app.generation.outputs import (
    SCHEMA_JSON_SCHEMAS,
    InvalidOutput,
    check_schema,
    check_text,
    clean_text,
)
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)

UNAVAILABLE_STATUSES = {429: "rate_limited", 503: "unavailable", 529: "overloaded"}
DEFAULT_RETRY_AFTER_SECONDS = {429: 30, 503: 15, 529: 15}
OUTPUT_ATTEMPTS = 2
"""One retry, within the same hold, when an output breaks its kind's rules."""

MAX_TOKENS = {
    GenerationKind.META_TITLE: 130,
    GenerationKind.META_DESCRIPTION: 260,
    GenerationKind.ALT_TEXT: 200,
    GenerationKind.SCHEMA: 2600,
}
"""Room for the output with the newer tokenizer's ~30% more tokens (Haiku 5.5's migration
guide: revisit `max_tokens`); thinking is off, so none of it goes to thinking."""

ADAPTIVE_THINKING_MODELS = ("claude-haiku-5-5",)
"""Models that think by default (adaptive thinking, `effort` medium) unless told not to."""

FRAMER_CDN_HOST = "framerusercontent.com"
SCALE_DOWN = "scale-down-to"

_COMMON = (
    "You write SEO metadata for websites built with Framer. Answer with the requested text "
    "only: no preamble, no label, no quotation marks, no explanation, no markdown."
)

SYSTEM_PROMPTS = {
    GenerationKind.META_TITLE: (
        f"{_COMMON}\n\nWrite the page's meta title (the <title> shown in search results). "
        "Rules: at most 60 characters including spaces; lead with the page's main topic and "
        "its most important keyword; specific and descriptive, never generic "
        '("Home", "Welcome"); no keyword stuffing, no ALL CAPS, no clickbait, no trailing '
        "punctuation. Append the brand after a separator only if it fits."
    ),
    GenerationKind.META_DESCRIPTION: (
        f"{_COMMON}\n\nWrite the page's meta description (the snippet under the title in "
        "search results). Rules: at most 160 characters including spaces, ideally 120 to "
        "155; one or two complete sentences in active voice that say what the page offers "
        "and why it is worth a click; include the main keyword naturally; no quotation "
        "marks, no keyword lists, no claims the page does not make."
    ),
    GenerationKind.ALT_TEXT: (
        f"{_COMMON}\n\nWrite alt text for the image, for screen-reader users and image "
        "search. Rules: at most 125 characters; describe what the image shows that matters "
        "in the page's context (subject, action, setting, visible text); never begin with "
        '"image of", "picture of", "photo of" or similar; no "alt text:" label; no keyword '
        "stuffing; end without a period unless it is a full sentence."
    ),
    GenerationKind.SCHEMA: (
        "You write schema.org JSON-LD structured data for web pages. Use only facts stated in "
        "the page content; omit optional properties the page does not support rather than "
        'inventing them. "@context" is "https://schema.org". Dates are ISO 8601.'
    ),
}


def _language_rule(language: str | None) -> str:
    if language:
        return f"Write in the page's language: {language} (BCP 47)."
    return "Write in the same language as the page content."


def _page_block(payload: dict[str, Any]) -> str:
    parts = []
    if payload.get("page_title"):
        parts.append(f"Page title: {payload['page_title']}")
    if payload.get("page_url"):
        parts.append(f"Page URL: {payload['page_url']}")
    if payload.get("keywords"):
        parts.append("Target keywords: " + ", ".join(payload["keywords"]))
    parts.append(f"<page_content>\n{payload['page_content']}\n</page_content>")
    return "\n".join(parts)


@dataclass(frozen=True)
class RequestShape:
    """What the settings decide about every request: the model, its thinking, the input
    budget per kind and the Framer image variant."""

    model: str
    effort: str = "low"
    image_variant_px: int = 512
    budgets: tuple[tuple[GenerationKind, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "RequestShape":
        return cls(
            model=settings.anthropic_model,
            effort=settings.anthropic_effort,
            image_variant_px=settings.framer_image_variant_px,
            budgets=(
                (GenerationKind.META_TITLE, settings.input_budget_meta_title_tokens),
                (GenerationKind.META_DESCRIPTION, settings.input_budget_meta_description_tokens),
                (GenerationKind.SCHEMA, settings.input_budget_schema_tokens),
                (GenerationKind.ALT_TEXT, settings.input_budget_alt_text_tokens),
            ),
        )

    def budget(self, kind: GenerationKind) -> int | None:
        return dict(self.budgets).get(kind)


def image_variant(url: str, px: int) -> str:
    """A `framerusercontent.com` image as its `px` variant (`scale-down-to`, long side, never
    upscaled; a smaller variant asked for already is kept), other query parameters as they
    were. Other hosts, and `px` 0, unchanged."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if px <= 0 or not (host == FRAMER_CDN_HOST or host.endswith("." + FRAMER_CDN_HOST)):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    asked = [value for key, value in query if key == SCALE_DOWN]
    if asked and asked[-1].isdigit() and 0 < int(asked[-1]) <= px:
        return url
    kept = [(key, value) for key, value in query if key != SCALE_DOWN]
    return urlunsplit(parts._replace(query=urlencode([*kept, (SCALE_DOWN, str(px))])))


def thinking_params(model: str, effort: str) -> dict[str, Any]:
    """Haiku 5.5 thinks by default, and thinking tokens are billed as output: our outputs
    (one line, or a small JSON object) do not need it, so it is turned off and the effort
    set low. Older models do not know these parameters (and do not think unless asked)."""
    if model.startswith(ADAPTIVE_THINKING_MODELS):
        return {"thinking": {"type": "disabled"}, "output_config": {"effort": effort}}
    return {}


def build_request(
    kind: GenerationKind,
    payload: dict[str, Any],
    shape: RequestShape | None = None,
    *,
    image_variant_on: bool = True,
) -> dict[str, Any]:
    """The Messages API arguments for one generation: model, limits, thinking, system
    prompt and the message (page content within its budget, images as their variant)."""
    shape = shape or RequestShape(model="claude-haiku-5-5")
    payload = dict(payload)
    budget = shape.budget(kind)
    if budget is not None:
        field = "context" if kind is GenerationKind.ALT_TEXT else "page_content"
        if payload.get(field):
            payload[field] = trim_to_budget(payload[field], budget)
    content: list[Any]
    if kind is GenerationKind.ALT_TEXT:
        context = payload.get("context")
        text = "Write the alt text for this image."
        if context:
            text += f"\n<context>\n{context}\n</context>"
        text += f"\n{_language_rule(payload.get('language'))}"
        url = payload["image_url"]
        if image_variant_on:
            url = image_variant(url, shape.image_variant_px)
        content = [
            {"type": "image", "source": {"type": "url", "url": url}},
            TextBlockParam(type="text", text=text),
        ]
    elif kind is GenerationKind.SCHEMA:
        text = f"Write {payload['schema_type']} JSON-LD for this page.\n{_page_block(payload)}"
        content = [TextBlockParam(type="text", text=text)]
    else:
        label = "meta title" if kind is GenerationKind.META_TITLE else "meta description"
        text = (
            f"Write the {label} for this page. {_language_rule(payload.get('language'))}\n"
            f"{_page_block(payload)}"
        )
        content = [TextBlockParam(type="text", text=text)]
    messages: list[MessageParam] = [{"role": "user", "content": content}]
    request: dict[str, Any] = {
        "model": shape.model,
        "max_tokens": MAX_TOKENS[kind],
        "system": SYSTEM_PROMPTS[kind],
        "messages": messages,
        **thinking_params(shape.model, shape.effort),
    }
    if kind is GenerationKind.SCHEMA:
        request["output_config"] = {
            **request.get("output_config", {}),
            "format": {
                "type": "json_schema",
                "schema": SCHEMA_JSON_SCHEMAS[payload["schema_type"]],
            },
        }
    return request


def has_image_variant(kind: GenerationKind, payload: dict[str, Any], shape: RequestShape) -> bool:
    return kind is GenerationKind.ALT_TEXT and (
        image_variant(payload["image_url"], shape.image_variant_px) != payload["image_url"]
    )


def _retry_after(error: anthropic.APIStatusError) -> int:
    header = error.response.headers.get("retry-after")
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        seconds = None
    if seconds is None or seconds <= 0:
        return DEFAULT_RETRY_AFTER_SECONDS.get(error.status_code, 30)
    return max(1, math.ceil(seconds))


class AnthropicProvider:
    def __init__(self, settings: Settings) -> None:
        assert settings.anthropic_api_key is not None
        self.model = settings.anthropic_model
        self.shape = RequestShape.from_settings(settings)
        self.client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            max_retries=settings.anthropic_max_retries,
            timeout=settings.anthropic_timeout_seconds,
        )

    async def aclose(self) -> None:
        await self.client.close()

    def request_for(
        self, kind: GenerationKind, payload: dict[str, Any], *, image_variant_on: bool = True
    ) -> dict[str, Any]:
        return build_request(kind, payload, self.shape, image_variant_on=image_variant_on)

    async def generate(
        self, kind: GenerationKind, payload: dict[str, Any], *, attempts: int = OUTPUT_ATTEMPTS
    ) -> ProviderResult:
        request = self.request_for(kind, payload)
        # If the model cannot fetch a Framer variant, the original once (same hold).
        original = (
            self.request_for(kind, payload, image_variant_on=False)
            if has_image_variant(kind, payload, self.shape)
            else None
        )
        started = time.perf_counter()
        input_tokens = output_tokens = 0
        model = self.model
        invalid: InvalidOutput | None = None
        attempt = 0
        while attempt < attempts:
            try:
                message = await self._create(kind, request, input_tokens, output_tokens)
            except ProviderError as exc:
                if original is None or exc.reason != "invalid_request":
                    raise
                request, original = original, None
                continue
            attempt += 1
            model = message.model or self.model
            input_tokens += message.usage.input_tokens
            output_tokens += message.usage.output_tokens
            try:
                output = self.read_output(kind, payload, message)
            except InvalidOutput as exc:
                invalid = exc
                continue
            latency_ms = round((time.perf_counter() - started) * 1000)
            return ProviderResult(output, model, input_tokens, output_tokens, latency_ms)
        assert invalid is not None
        raise ProviderError(
            FailureKind.FAILED,
            invalid.reason,
            f"Claude's output was not usable twice: {invalid.detail}",
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    async def _create(
        self, kind: GenerationKind, request: dict[str, Any], input_tokens: int, output_tokens: int
    ) -> anthropic.types.Message:
        usage: dict[str, Any] = {
            "model": self.model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        try:
            return await self.client.messages.create(**request)
        except anthropic.APITimeoutError as exc:
            raise ProviderError(
                FailureKind.FAILED, "timeout", "Claude did not answer in time.", **usage
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(
                FailureKind.FAILED, "connection_error", "Claude could not be reached.", **usage
            ) from exc
        except anthropic.APIStatusError as exc:
            if exc.status_code in UNAVAILABLE_STATUSES:
                raise ProviderError(
                    FailureKind.UNAVAILABLE,
                    UNAVAILABLE_STATUSES[exc.status_code],
                    "Claude is rate limited or overloaded right now.",
                    retry_after_seconds=_retry_after(exc),
                    **usage,
                ) from exc
            raise ProviderError(
                FailureKind.FAILED,
                "invalid_request" if exc.status_code == 400 else "upstream_error",
                f"Claude answered with HTTP {exc.status_code}.",
                **usage,
            ) from exc

    def read_output(
        self, kind: GenerationKind, payload: dict[str, Any], message: anthropic.types.Message
    ) -> dict[str, Any]:
        if message.stop_reason == "max_tokens":
            raise InvalidOutput("output_too_long", "The output was cut off at the token limit.")
        if message.stop_reason == "refusal":
            raise InvalidOutput("refused", "Claude declined to write this output.")
        text = "".join(block.text for block in message.content if block.type == "text")
        if kind is GenerationKind.SCHEMA:
            return check_schema(payload["schema_type"], text)
        return check_text(kind, clean_text(kind, text))
