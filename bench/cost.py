"""Model cost per generation and per credit: the old default, the new default, economy.

    .venv/bin/python -m bench.cost

Runs the service's own Anthropic provider (request shaping, input budgets, Framer image
variants, the output checks) against the stand-in Claude API (`tests/fakes`), which counts
tokens the way Anthropic documents them (text by length, 30% more on Haiku 5.5's tokenizer;
images width x height / 750 after the variant's and the API's downscale; thinking tokens as
output). Economy goes through the stand-in's Message Batches API with the same requests.
Costs come from the service's price table (`app.generation.pricing`).

The fixed set: 10 pages from 400 to 50,000 characters (meta title, meta description and
schema for each) and 20 images (12 on framerusercontent.com, 8 elsewhere, 320 to 4,000 px).
Prints the per-kind table and the margin table (model cost per credit against the price per
credit of each package), for docs/benchmarks.md. Target: at standard priority, model cost at
most 20% of the first-time price per credit ($0.00032) for every kind.
"""

import asyncio
import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.config import Settings
from app.generation import pricing
from app.generation.providers.anthropic import AnthropicProvider
from app.generation.providers.base import GenerationKind
from app.payments.packages import PACKAGES
from tests.fakes.anthropic_server import FakeAnthropic

SENTENCES = [
    "Vermont Woodworks builds solid oak and walnut dining tables by hand in a small workshop.",
    "Every table is made to order, finished with natural oils and delivered across New England.",
    "Customers choose the size, the edge profile and the finish, and we send photos as we work.",
    "Our wood comes from sustainably managed forests within two hundred miles of the shop.",
    "A table takes four to six weeks from order to delivery, depending on the season.",
    "We also restore antique furniture and build benches, chairs and sideboards to match.",
]
PAGE_LENGTHS = [400, 900, 1_500, 2_500, 3_500, 5_000, 8_000, 15_000, 30_000, 50_000]
SCHEMA_TYPES = ["Organization", "Product", "Article", "LocalBusiness", "WebPage"]
IMAGE_SIZES = [
    (4000, 3000),
    (2400, 1600),
    (1920, 1080),
    (1600, 1600),
    (1200, 800),
    (1024, 768),
    (800, 600),
    (640, 480),
    (512, 512),
    (320, 240),
]
TARGET_SHARE = Decimal("0.20")
TARGET_MICROS = Decimal(320)
"""20% of the first-time price per credit as the help page rounds it ($0.0016): $0.00032."""
REALISTIC_SCHEMA_OUTPUT_TOKENS = 400
"""The stand-in's JSON-LD documents are small; a real one with a few properties is 150-400
tokens: the schema figure is also shown with 400 output tokens."""


def page(length: int, index: int) -> str:
    """A page of about `length` characters, in paragraphs of three sentences."""
    paragraphs, size, n = [], 0, index
    while size < length:
        paragraph = " ".join(SENTENCES[(n + k) % len(SENTENCES)] for k in range(3))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
        n += 1
    return "\n\n".join(paragraphs)[:length]


def inputs() -> dict[GenerationKind, list[dict[str, Any]]]:
    pages = [page(length, i) for i, length in enumerate(PAGE_LENGTHS)]
    images = []
    for i in range(20):
        width, height = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        host = "framerusercontent.com/images" if i < 12 else "cdn.example.com/media"
        images.append(
            {
                "image_url": f"https://{host}/oak-table-{i}-fake-size-{width}x{height}.jpg",
                "context": "Handmade oak dining table in a bright Vermont farmhouse kitchen",
            }
        )
    return {
        GenerationKind.META_TITLE: [
            {"page_title": "Oak tables", "page_content": p, "language": "en"} for p in pages
        ],
        GenerationKind.META_DESCRIPTION: [{"page_content": p, "language": "en"} for p in pages],
        GenerationKind.SCHEMA: [
            {"schema_type": SCHEMA_TYPES[i % len(SCHEMA_TYPES)], "page_content": p}
            for i, p in enumerate(pages)
        ],
        GenerationKind.ALT_TEXT: images,
    }


@dataclass
class Figures:
    input_tokens: list[int]
    output_tokens: list[int]
    cost_micros: list[Decimal]

    def mean_cost(self) -> Decimal:
        return sum(self.cost_micros, Decimal(0)) / len(self.cost_micros)


def old_default(url: str) -> Settings:
    """The first release: Claude Haiku 4.5, whole pages, original images."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        anthropic_api_key="sk-ant-bench",
        anthropic_base_url=url,
        anthropic_model="claude-haiku-4-5",
        framer_image_variant_px=0,
        input_budget_meta_title_tokens=100_000,
        input_budget_meta_description_tokens=100_000,
        input_budget_schema_tokens=100_000,
        input_budget_alt_text_tokens=100_000,
    )


def new_default(url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, anthropic_api_key="sk-ant-bench", anthropic_base_url=url
    )


async def standard(settings: Settings, data: dict[GenerationKind, list[dict]]) -> dict:
    provider = AnthropicProvider(settings)
    prices = pricing.price_table(settings)
    figures = {}
    try:
        for kind, payloads in data.items():
            found = Figures([], [], [])
            for payload in payloads:
                result = await provider.generate(kind, payload)
                found.input_tokens.append(result.input_tokens)
                found.output_tokens.append(result.output_tokens)
                cost = pricing.exact_cost_usd_micros(
                    prices, result.model, "standard", result.input_tokens, result.output_tokens
                )
                assert cost is not None
                found.cost_micros.append(cost)
            figures[kind] = found
    finally:
        await provider.aclose()
    return figures


async def economy(settings: Settings, data: dict[GenerationKind, list[dict]]) -> dict:
    provider = AnthropicProvider(settings)
    prices = pricing.price_table(settings)
    figures = {}
    try:
        for kind, payloads in data.items():
            requests = [
                {"custom_id": f"item-{i}", "params": provider.request_for(kind, payload)}
                for i, payload in enumerate(payloads)
            ]
            batch = await provider.client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            while batch.processing_status != "ended":
                await asyncio.sleep(0.1)
                batch = await provider.client.messages.batches.retrieve(batch.id)
            found = Figures([], [], [])
            async for line in await provider.client.messages.batches.results(batch.id):
                assert line.result.type == "succeeded", line
                message = line.result.message
                provider.read_output(kind, payloads[int(line.custom_id[5:])], message)
                usage = message.usage
                found.input_tokens.append(usage.input_tokens)
                found.output_tokens.append(usage.output_tokens)
                cost = pricing.exact_cost_usd_micros(
                    prices, message.model, "economy", usage.input_tokens, usage.output_tokens
                )
                assert cost is not None
                found.cost_micros.append(cost)
            figures[kind] = found
    finally:
        await provider.aclose()
    return figures


def dollars(micros: Decimal) -> str:
    return f"${micros / 1_000_000:.6f}"


async def main() -> None:
    fake = FakeAnthropic().start()
    fake.batch_processing_seconds = 0.2
    data = inputs()
    try:
        runs = {
            "old default (Haiku 4.5, whole pages, original images)": await standard(
                old_default(fake.url), data
            ),
            "new default (Haiku 5.5, shaped, standard)": await standard(
                new_default(fake.url), data
            ),
            "economy (Haiku 5.5, shaped, Message Batches API)": await economy(
                new_default(fake.url), data
            ),
        }
    finally:
        fake.stop()

    print("## Tokens and model cost per generation (mean over the set; max in brackets)\n")
    print("| configuration | kind | n | input tokens | output tokens | cost per generation |")
    print("|---|---|---|---|---|---|")
    for name, figures in runs.items():
        for kind, found in figures.items():
            print(
                f"| {name} | {kind.value} | {len(found.cost_micros)} "
                f"| {statistics.mean(found.input_tokens):,.0f} ({max(found.input_tokens):,}) "
                f"| {statistics.mean(found.output_tokens):,.0f} "
                f"| {dollars(found.mean_cost())} ({dollars(max(found.cost_micros))}) |"
            )
    print("\n## Margin: model cost per credit against the price per credit\n")
    header = " | ".join(
        f"{p.name} (${Decimal(p.price_cents) / 100 / p.credits:.5f})" for p in PACKAGES
    )
    print(f"| configuration | kind | cost per credit | {header} |")
    print("|---|---|---|" + "---|" * len(PACKAGES))
    verdicts = []
    for name, figures in runs.items():
        for kind, found in figures.items():
            cost = found.mean_cost()
            shares = " | ".join(
                f"{cost / (Decimal(p.price_cents) / 100 / p.credits * 1_000_000):.1%}"
                for p in PACKAGES
            )
            print(f"| {name} | {kind.value} | {dollars(cost)} | {shares} |")
            if name.startswith("new default"):
                verdicts.append((kind.value, cost))
                if kind is GenerationKind.SCHEMA:
                    extra = REALISTIC_SCHEMA_OUTPUT_TOKENS - statistics.mean(found.output_tokens)
                    output_price = pricing.PUBLISHED_PRICES["claude-haiku-5-5"][1]
                    verdicts.append(
                        (
                            f"schema with {REALISTIC_SCHEMA_OUTPUT_TOKENS}-token outputs",
                            cost + Decimal(str(extra)) * output_price,
                        )
                    )
    print(
        f"\nTarget (standard priority): at most {TARGET_SHARE:.0%} of the first-time price per "
        f"credit ($0.0016), {dollars(TARGET_MICROS)}:"
    )
    for kind_name, cost in verdicts:
        met = "met" if cost <= TARGET_MICROS else "NOT MET"
        print(f"- {kind_name}: {dollars(cost)} ({cost / TARGET_MICROS:.0%} of the target) {met}")


if __name__ == "__main__":
    asyncio.run(main())
