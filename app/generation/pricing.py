"""What a model call costs: a price table per model, in integer micro-dollars.

A price in USD per million tokens is the same number in micro-dollars per token, so a
call's cost is `input_tokens * input_price + output_tokens * output_price` micro-dollars,
rounded once to an integer (half up). Economy work (the Message Batches API) costs half.
The built-in table holds the published prices (prompts up to 100,000 tokens, which the
input budgets keep every prompt far below); `MODEL_PRICES` overrides or adds models."""

from decimal import ROUND_HALF_UP, Decimal

from app.config import ModelPrices, Settings

PUBLISHED_PRICES: ModelPrices = {
    "claude-haiku-5-5": (Decimal("0.10"), Decimal("0.50")),
    "claude-haiku-4-5": (Decimal("1"), Decimal("5")),
    "claude-haiku-4-5-20251001": (Decimal("1"), Decimal("5")),
    "offline-extractive-1": (Decimal("0"), Decimal("0")),
}
"""USD per million tokens (input, output), from Anthropic's pricing page."""

PRIORITIES = ("standard", "economy")
ECONOMY_FACTOR = Decimal("0.5")
"""The Message Batches API bills input and output at half the standard price."""


def price_table(settings: Settings) -> ModelPrices:
    return {**PUBLISHED_PRICES, **settings.model_prices}


def exact_cost_usd_micros(
    prices: ModelPrices, model: str | None, priority: str, input_tokens: int, output_tokens: int
) -> Decimal | None:
    """The unrounded cost in micro-dollars, or None for a model without a price."""
    if model is None or model not in prices:
        return None
    input_price, output_price = prices[model]
    cost = input_tokens * input_price + output_tokens * output_price
    if priority == "economy":
        cost *= ECONOMY_FACTOR
    return cost


def cost_usd_micros(
    prices: ModelPrices, model: str | None, priority: str, input_tokens: int, output_tokens: int
) -> int | None:
    """The cost in integer micro-dollars, or None for a model without a price."""
    cost = exact_cost_usd_micros(prices, model, priority, input_tokens, output_tokens)
    return None if cost is None else round_micros(cost)


def round_micros(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
