"""A deterministic extractive generator, used when no `ANTHROPIC_API_KEY` is set.

It writes nothing new: titles come from the page's title or first heading, descriptions
from its opening sentences, alt text from the image's file name and context, schema from
the page's fields. Same credit flow as Claude: a usable output costs one credit, an input
it can make nothing of fails for free."""

import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from app.generation.outputs import InvalidOutput, check_schema, check_text, clean_text
from app.generation.providers.base import (
    FailureKind,
    GenerationKind,
    ProviderError,
    ProviderResult,
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NOISE_TOKEN = re.compile(
    r"^(img|image|dsc|dscn|dcim|pxl|photo|pic|screenshot|final|copy|edit|edited|min|large|"
    r"small|thumb|thumbnail|scaled|web|hd|\d+|\d+x\d+|[0-9a-f]{8,}|v\d+|@\dx)$",
    re.IGNORECASE,
)


def trim_at_word(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, without a dangling
    separator."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > 0 else text[:limit]
    return cut.rstrip(" ,;:-–—|/")


def first_heading(content: str) -> str:
    for line in content.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line
    return ""


def opening_sentences(content: str, limit: int) -> str:
    """Whole sentences from the start of the text that fit `limit`; if the first alone does
    not, it is cut at a word boundary with an ellipsis."""
    text = " ".join(content.split())
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    chosen = ""
    for sentence in sentences:
        candidate = f"{chosen} {sentence}".strip()
        if len(candidate) > limit:
            break
        chosen = candidate
    if chosen:
        return chosen
    return trim_at_word(text, limit - 1) + "…"


def _words_from_file_name(image_url: str) -> str:
    path = unquote(urlsplit(image_url).path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = _CAMEL.sub(" ", stem)
    tokens = [t for t in re.split(r"[\s_\-+.,()\[\]]+", stem) if t]
    words = [t for t in tokens if not _NOISE_TOKEN.match(t)]
    if not words:
        return ""
    phrase = " ".join(w.lower() if not w.isupper() or len(w) > 4 else w for w in words)
    return phrase[0].upper() + phrase[1:]


class OfflineProvider:
    model = "offline-extractive-1"

    async def generate(self, kind: GenerationKind, payload: dict[str, Any]) -> ProviderResult:
        started = time.perf_counter()
        try:
            output = self._extract(kind, payload)
        except InvalidOutput as exc:
            raise ProviderError(
                FailureKind.FAILED, exc.reason, exc.detail, model=self.model
            ) from exc
        latency_ms = round((time.perf_counter() - started) * 1000)
        return ProviderResult(output, self.model, 0, 0, latency_ms)

    async def aclose(self) -> None:
        return None

    def _extract(self, kind: GenerationKind, payload: dict[str, Any]) -> dict[str, Any]:
        if kind is GenerationKind.META_TITLE:
            source = payload.get("page_title") or first_heading(payload["page_content"])
            return check_text(kind, clean_text(kind, trim_at_word(source, 60)))
        if kind is GenerationKind.META_DESCRIPTION:
            text = opening_sentences(payload["page_content"], 160)
            return check_text(kind, clean_text(kind, text))
        if kind is GenerationKind.ALT_TEXT:
            return check_text(kind, clean_text(kind, self._alt_text(payload)))
        return check_schema(payload["schema_type"], self._schema(payload))

    def _alt_text(self, payload: dict[str, Any]) -> str:
        subject = _words_from_file_name(payload["image_url"])
        context = " ".join((payload.get("context") or "").split())
        text = f"{subject}: {context}" if subject and context else subject or context
        if not text:
            raise InvalidOutput(
                "nothing_to_describe",
                "The offline generator cannot describe an image whose file name and context "
                "say nothing about it.",
            )
        return trim_at_word(text, 125)

    def _schema(self, payload: dict[str, Any]) -> dict[str, Any]:
        schema_type: str = payload["schema_type"]
        content: str = payload["page_content"]
        name = trim_at_word(payload.get("page_title") or first_heading(content), 110)
        description = opening_sentences(content, 160)
        document: dict[str, Any] = {"@context": "https://schema.org", "@type": schema_type}
        if schema_type == "Article":
            document |= {"headline": name, "description": description}
        elif schema_type == "FAQPage":
            document |= {"name": name, "mainEntity": self._questions(content)}
        else:
            document |= {"name": name, "description": description}
        if payload.get("page_url"):
            document["url"] = payload["page_url"]
        return document

    def _questions(self, content: str) -> list[dict[str, Any]]:
        lines = [line.strip() for line in content.splitlines() if line.strip()]
        questions = []
        for question, answer in zip(lines, lines[1:], strict=False):
            if question.endswith("?") and not answer.endswith("?"):
                questions.append(
                    {
                        "@type": "Question",
                        "name": question,
                        "acceptedAnswer": {"@type": "Answer", "text": answer},
                    }
                )
        if not questions:
            raise InvalidOutput(
                "nothing_to_extract",
                "The offline generator found no question lines (ending in `?`) followed by "
                "an answer in the page content.",
            )
        return questions
